"""InternVL3.5 (the HF-format checkpoints, `OpenGVLab/InternVL3_5-*-HF`): `<ref>label</ref><box>[[x1, y1, x2,
y2]]</box>` answers on the 0-1000 grid, 448-pixel tiles chosen by aspect ratio (dynamic tiling).

Sources: InternVL's documentation (grounding: "Please provide the bounding box coordinate of the region this
sentence describes: <ref>{}</ref>", boxes normalised to 0-1000, `<box>[[x1, y1, x2, y2]]</box>`);
transformers 5.6 / 5.19 `models/internvl` (model_type `internvl`, `InternVLForConditionalGeneration`,
`InternVLProcessor` over `GotOcr2ImageProcessor`: 448 tiles, 1..12 of them plus a thumbnail, `crop_to_patches`
on by default at call time while the released preprocessor config says false); LLaMA-Factory 0.9.5 template
`intern_vl` (InternVLPlugin: BasePlugin's area pre-shrink, then tiles only when its `crop_to_patches`
argument is set, with 12 / 1 tiles hard-coded), `visual.py` registers `internvl` with its defaults
(`vision_tower`, `multi_modal_projector`); vLLM 0.32 serves `InternVLForConditionalGeneration` with its
InternS1 model (tiles from the image processor's min/max patches).

One image, one size: training is told `crop_to_patches=true` (recipe_overrides), so LLaMA-Factory tiles as
the HF processor, TRL and vLLM do by default (12 / 1 tiles, the released bounds) instead of squashing every
image into one tile; every stage pre-shrinks with BasePlugin's calls (resize.preprocess_image_base).
"""

from __future__ import annotations

import re

from families.answers import ParsedAnswer
from families.base import GRID1000, REF_BOX, Family
from families.resize import llamafactory_base_size, preprocess_image_base

_NUM = r"(\d{1,6})"
_QUAD = rf"\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]"
QUAD_RE = re.compile(_QUAD)
BOX_SPAN_RE = re.compile(r"<box>\s*\[\s*(" + _QUAD + r"(?:\s*,\s*" + _QUAD + r")*)\s*\]\s*</box>")
REF_RE = re.compile(r"<ref>[^<>]{0,200}</ref>")


class InternVL(Family):
    name = "internvl"
    display = "InternVL3.5"
    model_types = ("internvl",)
    model_class = "InternVLForConditionalGeneration"
    template = "intern_vl"
    vision_tower_keys = ("vision_tower",)
    projector_keys = ("multi_modal_projector",)
    patch_size, merge_size = 14, 1
    box_convention = GRID1000
    answer_form = REF_BOX
    tile_size = 448
    # 12 tiles of 448 x 448: a larger image holds nothing the tiles could show (InternVL3.5's own bound)
    image_max_pixels, image_min_pixels = 12 * 448 * 448, 32 * 32
    budget_note = (
        "InternVL's budget is its tiles: 1..12 tiles of 448 x 448 (256 tokens each) plus a thumbnail, chosen "
        "by aspect ratio; the pixel budget only pre-shrinks (LLaMA-Factory's BasePlugin) beyond what 12 tiles "
        "can hold. Six images of 13 tiles are ~20k tokens: raise cutoff_len for multi-image InternVL runs."
    )
    grounding_suffix = (
        " Answer with the bounding box as <ref>object</ref><box>[[x1, y1, x2, y2]]</box> (0-1000)."
    )
    refer_template = (
        "Please provide the bounding box coordinate of the region this sentence describes: <ref>{ref}</ref>"
    )
    instruction_source = (
        "InternVL documentation (grounding request and <ref>/<box> answers on 0-1000); the free-form suffix "
        "is this pack's adaptation"
    )
    # eval's official parse reads `[x1, y1, x2, y2]` (the paper's brackets_int pattern) on the 0-1000 grid
    answer_format = "official"
    reasoning_answer_format = "think"
    thinking_answer_format = "official"
    image_placeholder = "<IMG_CONTEXT>"
    # LLaMA-Factory's `intern_vl` template sends InternVL's own system message (the one InternVL's chat()
    # uses); the -HF chat template has none, so eval and GRPO send it. The template writes "\n" after each
    # image itself.
    system_message = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
    template_image_suffix = "\n"
    # InternVL's tokenizer marks its grounding tags special: decoding must keep them
    answer_special_tokens = ("<ref>", "</ref>", "<box>", "</box>")
    tiny_builder = "demo.tiny_internvl:build"
    # The CPU demo's tiny InternVL sees 56-pixel tiles (4 tokens each, a pre-shrunk demo image 10 tiles):
    # with the released 448 (256 tokens a tile) a three-image record is thousands of tokens, past the
    # demo's 1,024-token cutoff. Tiling, answers and every stage's code path are the released ones.
    demo_tiny_options = {"tile": 56}

    @property
    def default_suffix(self) -> str:  # type: ignore[override]
        return self.name

    @property
    def factor(self) -> int:
        return self.tile_size

    # ------------------------------------------------------------ training

    def recipe_overrides(self, recipe: dict, template: str | None = None) -> list[str]:
        """The template and budget, and `crop_to_patches=true`: LLaMA-Factory then tiles as every other stage."""
        out = super().recipe_overrides(recipe, template)
        return out + ([] if recipe.get("crop_to_patches") is True else ["crop_to_patches=true"])

    # ------------------------------------------------------------ the image the model sees

    def preprocessed_size(self, width: int, height: int, image_max_pixels: int, image_min_pixels: int):
        return llamafactory_base_size(width, height, image_max_pixels, image_min_pixels)

    def preprocess_image(self, image, image_max_pixels: int, image_min_pixels: int):
        return preprocess_image_base(image, image_max_pixels, image_min_pixels)

    def canvas(self, width, height, image_max_pixels, image_min_pixels=None, processor_range=None):
        """The image handed to the processor (its tiles follow from it): boxes are on the 0-1000 grid, so
        no label depends on it."""
        if image_max_pixels is None:
            return width, height
        low = self.image_min_pixels if image_min_pixels is None else image_min_pixels
        return self.preprocessed_size(width, height, image_max_pixels, low)

    def view(self, image, image_processor) -> tuple[int, ...]:
        """(w, h, tiles): the image handed to the processor and the tiles its dynamic tiling makes of it."""
        out = image_processor(images=[image], crop_to_patches=True, return_tensors="pt")
        return image.width, image.height, int(out["num_patches"][0])

    def vllm_view(self, mm_item, image) -> tuple[int, ...]:
        tiles = mm_item["image_num_patches"].data
        return image.width, image.height, int(tiles.item() if hasattr(tiles, "item") else tiles)

    # ------------------------------------------------------------ answers

    def format_answers(self, objects) -> str:
        """`<ref>label</ref><box>[[x1, y1, x2, y2]]</box>` per object; boxes of one label share its box tag."""
        out, i = [], 0
        items = self._answer_items(objects)
        while i < len(items):
            label, boxes = items[i][0], [items[i][1]]
            while i + 1 < len(items) and items[i + 1][0] == label and label is not None:
                i += 1
                boxes.append(items[i][1])
            quads = ", ".join("[" + ", ".join(str(v) for v in b) + "]" for b in boxes)
            out.append((f"<ref>{label}</ref>" if label else "") + f"<box>[{quads}]</box>")
            i += 1
        return "".join(out)

    def parse_answer(self, text, *, opened_think: bool = False) -> ParsedAnswer | None:
        """The first box of the first `<box>[[...]]</box>` (else the first bare `[x1, y1, x2, y2]`), bounded."""
        text = self._answer_part(text, opened_think)
        if text is None:
            return None
        span = BOX_SPAN_RE.search(text)
        quads = QUAD_RE.findall(span.group(1) if span else text)
        if not quads:
            return None
        ref = REF_RE.search(text)
        label = ref.group(0)[5:-6] if ref else None
        return ParsedAnswer(box=tuple(int(v) for v in quads[0]), label=label, n_boxes=len(quads))

    def answer_boxes(self, text: str) -> list[tuple[int, int, tuple]]:
        """Each `[x1, y1, x2, y2]` inside a `<box>` tag, with its span."""
        out = []
        for span in BOX_SPAN_RE.finditer(text):
            for m in QUAD_RE.finditer(text, span.start(1), span.end(1)):
                out.append((m.start(), m.end(), tuple(int(v) for v in m.groups())))
        return out

    def is_one_box_answer(self, body: str) -> bool:
        body = REF_RE.sub("", body.strip(), count=1).strip()
        span = BOX_SPAN_RE.fullmatch(body)
        return span is not None and len(QUAD_RE.findall(span.group(1))) == 1
