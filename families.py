"""The base-model families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): one table of their conventions.

Why one table: the three families differ in what a box means (Qwen2-VL and Qwen3-VL: the 0-1000
grid; Qwen2.5-VL: pixels of the image *as the model sees it*, after resizing), in how an answer is
written (box tokens or JSON `bbox_2d`), in their LLaMA-Factory template and in their patch size.
Getting one of these wrong is silent (a public fork scored Qwen2.5-VL-7B at 2.39 on MIG-Bench by
comparing its pixels with 0-1000 ground truth), so converters, recipes, eval and the RL rewards all
read them from here. Sources are cited where each value is set; see also ../shared/BASE_MODELS.md.

Model text is untrusted: `parse_answer` bounds the text it reads and the numbers it accepts, and
returns None (never raises) on anything malformed; a JSON answer is read after its think block.

Two checks live here so every entry point shares them: `check_data_family` (`python -m families
check-data`, run by the training targets) refuses data whose converter reports record another family's
box format, and `training_template` gives a Qwen3-VL Thinking checkpoint (told apart from an Instruct
one only by the chat template it ships) LLaMA-Factory's thinking template.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grounding

log = logging.getLogger(__name__)

GRID1000, RESIZED_PIXELS = "grid1000", "resized-pixels"  # eval's --coords names for the same two conventions
BOX_TOKENS, JSON_BBOX = "box-tokens", "json-bbox_2d"

# LLaMA-Factory 0.9.5's Qwen2VLPlugin._preprocess_image (data/mm_plugin.py), inherited by its Qwen3VLPlugin:
# after the area pre-shrink / pre-grow, a side under 28 pixels is stretched to 28 and an aspect ratio
# over 200 is cut to 180 (the same 28 and 180 for every Qwen family).
LF_MIN_SIDE, LF_MAX_RATIO, LF_CUT_RATIO = 28, 200, 180


@dataclass(frozen=True)
class Family:
    name: str  # the --family / --box-format value
    display: str
    model_types: tuple[str, ...]  # config.json `model_type` values (transformers' own names)
    model_class: str  # transformers' ...ForConditionalGeneration for the first model_type
    template: str  # LLaMA-Factory 0.9.5 template for the Instruct checkpoints
    vision_tower_keys: tuple[str, ...]  # what LLaMA-Factory freezes with freeze_vision_tower
    projector_keys: tuple[str, ...]  # what freeze_multi_modal_projector freezes
    patch_size: int
    merge_size: int
    box_convention: str  # GRID1000 or RESIZED_PIXELS
    answer_form: str  # BOX_TOKENS or JSON_BBOX
    processor_min_pixels: int  # the released processor's smart_resize range (preprocessor_config.json)
    processor_max_pixels: int
    image_max_pixels: int  # this project's default training / eval budget per image
    image_min_pixels: int
    budget_note: str
    grounding_suffix: str  # appended to a free-form question (no separator, like eval.prompts)
    refer_template: str  # a referring-expression request; `{ref}` is the expression
    instruction_source: str
    # LLaMA-Factory 0.9.5 template for a Thinking checkpoint of the family (None: the family has none);
    # is_thinking_checkpoint tells one from its chat template.
    thinking_template: str | None = None

    @property
    def factor(self) -> int:
        """smart_resize's factor: each resized side is a multiple of patch x merge."""
        return self.patch_size * self.merge_size

    def tokens_for(self, resized_w: int, resized_h: int) -> int:
        """Visual tokens one image of this resized size takes in the prompt."""
        return (resized_w // self.patch_size) * (resized_h // self.patch_size) // (self.merge_size**2)


_QWEN2_TOWER = ("visual.patch_embed", "visual.blocks")
_QWEN3_TOWER = ("visual.pos_embed", "visual.patch_embed", "visual.blocks", "visual.deepstack_merger_list")
_BUDGET_28 = (
    "401408 = 512 x 28 x 28: about 512 visual tokens per image (at most 540 after smart_resize's "
    "rounding for aspect ratios up to 8:1), so MIG-Bench's six images take about 3,100-3,240 tokens, "
    "inside stage 1's 6,000-token cutoff with room for the text (the paper states no budget)."
)

FAMILIES: dict[str, Family] = {
    "qwen2-vl": Family(
        name="qwen2-vl",
        display="Qwen2-VL",
        model_types=("qwen2_vl",),
        model_class="Qwen2VLForConditionalGeneration",
        template="qwen2_vl",
        vision_tower_keys=_QWEN2_TOWER,
        projector_keys=("visual.merger",),
        patch_size=14,
        merge_size=2,
        box_convention=GRID1000,
        answer_form=BOX_TOKENS,
        processor_min_pixels=3136,  # Qwen/Qwen2-VL-7B-Instruct preprocessor_config.json
        processor_max_pixels=12845056,
        image_max_pixels=401408,
        image_min_pixels=3136,
        budget_note=_BUDGET_28,
        # MIG-Bench's released suffix (eval.prompts FORMAT_SUFFIXES["released"]), MGrounding's own form.
        grounding_suffix="Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate addtional words.",
        refer_template=(
            "Please provide the bounding box coordinate of the region this sentence describes: "
            f"{grounding.REF_START}{{ref}}{grounding.REF_END}"
        ),
        instruction_source=(
            "Qwen2-VL report Sec. 2.2.1 (0-1000 grid, box tokens); MIG-Bench's released suffix; "
            "converters/refcoco.py's first referring prompt"
        ),
    ),
    "qwen2.5-vl": Family(
        name="qwen2.5-vl",
        display="Qwen2.5-VL",
        model_types=("qwen2_5_vl",),
        model_class="Qwen2_5_VLForConditionalGeneration",
        template="qwen2_vl",  # LLaMA-Factory registers the Qwen2.5-VL group with template="qwen2_vl"
        vision_tower_keys=_QWEN2_TOWER,
        projector_keys=("visual.merger",),
        patch_size=14,
        merge_size=2,
        box_convention=RESIZED_PIXELS,
        answer_form=JSON_BBOX,
        processor_min_pixels=3136,  # Qwen/Qwen2.5-VL-7B-Instruct preprocessor_config.json
        processor_max_pixels=12845056,
        image_max_pixels=401408,
        image_min_pixels=3136,
        budget_note=_BUDGET_28
        + " Boxes are pixels of this resized image, so the budget is part of the label.",
        grounding_suffix=" Output its bbox coordinates using JSON format.",
        refer_template="Locate {ref}, output its bbox coordinates using JSON format.",
        instruction_source=(
            "Qwen2.5-VL cookbook (spatial understanding): 'Locate the top right brown cake, output its bbox "
            "coordinates using JSON format.'; the suffix is that sentence's second half"
        ),
    ),
    "qwen3-vl": Family(
        name="qwen3-vl",
        display="Qwen3-VL",
        model_types=("qwen3_vl", "qwen3_vl_moe"),
        model_class="Qwen3VLForConditionalGeneration",
        template="qwen3_vl_nothink",  # Instruct; a Thinking checkpoint needs template=qwen3_vl
        vision_tower_keys=_QWEN3_TOWER,
        projector_keys=("visual.merger",),
        patch_size=16,
        merge_size=2,
        box_convention=GRID1000,
        answer_form=JSON_BBOX,
        processor_min_pixels=65536,  # Qwen/Qwen3-VL-*-Instruct preprocessor_config.json `size`
        processor_max_pixels=16777216,
        image_max_pixels=524288,
        image_min_pixels=4096,
        budget_note=(
            "524288 = 512 x 32 x 32: patch 16 x merge 2 makes a token cover 32 x 32 pixels, so this keeps "
            "Qwen2-VL's ~512 tokens per image (at most 540 after rounding for aspect ratios up to 8:1) and "
            "the six-image prompt at about 3,100-3,240 tokens, inside the 6,000-token cutoff; 401408 would "
            "give only ~392 tokens. The released processor's own minimum (65536 px, 64 tokens) still applies."
        ),
        grounding_suffix=" Report bbox coordinates in JSON format.",
        refer_template=(
            'Locate every object that matches the description "{ref}" in the image. '
            "Report bbox coordinates in JSON format."
        ),
        instruction_source="Qwen3-VL report App. B.5 (its RefCOCO grounding prompt); 0-1000 grid: Sec. 3.2.4",
        # LLaMA-Factory's qwen3_vl is a ReasoningTemplate (an answer without <think> gets an empty think
        # block, as the Thinking model writes); qwen3_vl_nothink is the plain one the Instruct models use.
        thinking_template="qwen3_vl",
    ),
}
FAMILY_CHOICES = tuple(FAMILIES)
DEFAULT_FAMILY = "qwen2-vl"


_DEFAULT_MIN_PIXELS, _DEFAULT_MAX_PIXELS = 56 * 56, 28 * 28 * 1280  # Qwen2VLImageProcessor.size's defaults


class UnknownFamilyError(ValueError):
    """A checkpoint or a --family value that is none of the known families."""


def get_family(family: str | Family) -> Family:
    """The table entry for a --family value (or a Family, returned as is)."""
    if isinstance(family, Family):
        return family
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise UnknownFamilyError(
            f"unknown model family {family!r}; choose from {', '.join(FAMILY_CHOICES)}"
        ) from None


def family_for_model_type(model_type: str) -> Family | None:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    return None


def detect_family(model_dir: str | Path) -> Family:
    """The family of a checkpoint folder, from its config.json `model_type` (a --family override is the caller's)."""
    path = Path(model_dir) / "config.json"
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UnknownFamilyError(f"cannot read {path} to detect the model family: {err}") from None
    if len(raw) > 16 * 1024 * 1024:
        raise UnknownFamilyError(f"{path} is {len(raw)} bytes, not a model config")
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise UnknownFamilyError(f"{path} is not valid JSON: {err}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str):
        raise UnknownFamilyError(
            f"{path} has no string `model_type`; pass --family ({', '.join(FAMILY_CHOICES)})"
        )
    fam = family_for_model_type(model_type)
    if fam is None:
        known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
        raise UnknownFamilyError(
            f"{path}: model_type {model_type!r} is not a known family (known: {known}); "
            f"pass --family ({', '.join(FAMILY_CHOICES)}) if it follows one of them"
        )
    log.debug("%s: model_type %s -> family %s", path, model_type, fam.name)
    return fam


def processor_pixel_range(model_dir: str | Path) -> tuple[int, int]:
    """(min_pixels, max_pixels) of a checkpoint's image processor, as smart_resize will use them.

    Reads `preprocessor_config.json` (the released layout) or transformers 5's `processor_config.json`
    (`image_processor` inside it) with Qwen2VLImageProcessor.__init__'s precedence: legacy
    `min_pixels`/`max_pixels` override `size.shortest_edge/longest_edge`, and what neither gives is
    the class default (56 x 56 and 28 x 28 x 1280).
    """
    folder = Path(model_dir)
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as err:
            raise ValueError(f"cannot read the image processor settings in {path}: {err}") from None
        if isinstance(config, dict) and name == "processor_config.json":
            config = config.get("image_processor")
        if not isinstance(config, dict):
            raise ValueError(f"{path} holds no image processor settings (a JSON object)")
        size = config.get("size") if isinstance(config.get("size"), dict) else {}
        lo = config.get("min_pixels", size.get("shortest_edge", _DEFAULT_MIN_PIXELS))
        hi = config.get("max_pixels", size.get("longest_edge", _DEFAULT_MAX_PIXELS))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (lo, hi)) or lo > hi:
            raise ValueError(
                f"{path}: image processor pixel range {lo!r}..{hi!r} is not two positive integers"
            )
        return lo, hi
    raise ValueError(
        f"{folder} has no image processor settings (preprocessor_config.json or processor_config.json)"
    )


# ---------------------------------------------------------------- Thinking or Instruct (Qwen3-VL)

_MAX_TEMPLATE_BYTES = 1024 * 1024  # released chat templates are 2-10 kB
# A generation prompt that opens a think block: `'<|im_start|>assistant\n<think>` in the template's source
# (`\n` written as the two characters, as Jinja string literals hold it, or as a newline).
_THINK_PROMPT_RE = re.compile(r"<\|im_start\|>assistant(?:\\n|\n)<think>")


def chat_templates(model_dir: str | Path) -> list[tuple[Path, str]]:
    """The chat templates a checkpoint ships: chat_template.jinja (transformers 5), tokenizer_config.json's
    `chat_template` (a string, or a list of {name, template}), chat_template.json's (the processor's).
    Unreadable or oversized files are skipped with a warning: a template decides a default, not the data."""
    folder = Path(model_dir)
    found: list[tuple[Path, str]] = []
    for name in ("chat_template.jinja", "tokenizer_config.json", "chat_template.json"):
        path = folder / name
        try:
            if not path.is_file():
                continue
            if path.stat().st_size > _MAX_TEMPLATE_BYTES * 16:
                log.warning("%s: %d bytes, too large to read its chat template", path, path.stat().st_size)
                continue
            text = path.read_text(encoding="utf-8")
            if name.endswith(".jinja"):
                found.append((path, text))
                continue
            value = json.loads(text).get("chat_template") if text.lstrip().startswith("{") else None
        except (OSError, ValueError, RecursionError, AttributeError) as err:
            log.warning("%s: cannot read its chat template: %s", path, err)
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            template = item.get("template") if isinstance(item, dict) else item
            if isinstance(template, str) and len(template) <= _MAX_TEMPLATE_BYTES:
                found.append((path, template))
    return found


def is_thinking_checkpoint(model_dir: str | Path) -> Path | None:
    """The file whose chat template makes this a Thinking checkpoint (generation prompt opening `<think>`,
    as Qwen3-VL-*-Thinking ship), or None (Instruct, or no template). Both variants have model_type
    qwen3_vl, so only what the checkpoint ships tells them apart."""
    for path, template in chat_templates(model_dir):
        if _THINK_PROMPT_RE.search(template):
            return path
    return None


def training_template(model_dir: str | Path | None, family: str | Family) -> tuple[str, Path | None]:
    """(LLaMA-Factory template, the file that made it the thinking one or None) for a checkpoint."""
    fam = get_family(family)
    if fam.thinking_template and model_dir is not None and Path(model_dir).is_dir():
        source = is_thinking_checkpoint(model_dir)
        if source is not None:
            return fam.thinking_template, source
    return fam.template, None


# ---------------------------------------------------------------- the image size the model is trained on


def llamafactory_preprocessed_size(width: int, height: int, image_max_pixels: int, image_min_pixels: int):
    """(w, h) of the PIL image LLaMA-Factory 0.9.5 hands the processor (Qwen2VLPlugin._preprocess_image).

    Its steps, in order: area pre-shrink to image_max_pixels with int() truncation, area pre-grow to
    image_min_pixels (int() again), a side under 28 stretched to 28, an aspect ratio over 200 cut to 180.
    A side that truncates to 0 pixels is refused: PIL's resize raises there too, so the record cannot train.
    """
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"image {name} must be a positive integer, got {value!r}")
    w, h = width, height
    if w * h > image_max_pixels:
        factor = math.sqrt(image_max_pixels / (w * h))
        w, h = int(w * factor), int(h * factor)
        if w <= 0 or h <= 0:
            raise ValueError(
                f"a {width}x{height} image shrinks to {w}x{h} under image_max_pixels={image_max_pixels}: "
                "LLaMA-Factory cannot resize it (aspect ratio too extreme)"
            )
    if w * h < image_min_pixels:
        factor = math.sqrt(image_min_pixels / (w * h))
        w, h = int(w * factor), int(h * factor)
    if min(w, h) < LF_MIN_SIDE:
        w, h = max(w, LF_MIN_SIDE), max(h, LF_MIN_SIDE)
    if w / h > LF_MAX_RATIO:
        w, h = h * LF_CUT_RATIO, h
    if h / w > LF_MAX_RATIO:
        w, h = w, w * LF_CUT_RATIO
    return w, h


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) exactly as transformers' qwen2_vl smart_resize (5.6 and 5.19 agree): sides to multiples of
    `factor`, area into [min_pixels, max_pixels]; its aspect-ratio refusal is kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def training_resized_size(
    width: int,
    height: int,
    image_max_pixels: int,
    image_min_pixels: int,
    family: str | Family,
    processor_min_pixels: int | None = None,
    processor_max_pixels: int | None = None,
) -> tuple[int, int]:
    """(w, h) of an image as LLaMA-Factory 0.9.5 feeds it to the model in training.

    LLaMA-Factory's pre-processing (`llamafactory_preprocessed_size`), then the processor's own
    smart_resize with factor patch x merge and the processor's min/max pixels (the released
    processor's when not given; `processor_pixel_range(model_dir)` reads a checkpoint's).
    Example (issue 15): 1024x768 under 401408 -> 731x548 -> 728x560 for Qwen2.5-VL.
    """
    fam = get_family(family)
    lo = fam.processor_min_pixels if processor_min_pixels is None else processor_min_pixels
    hi = fam.processor_max_pixels if processor_max_pixels is None else processor_max_pixels
    w, h = llamafactory_preprocessed_size(width, height, image_max_pixels, image_min_pixels)
    rh, rw = smart_resize(h, w, fam.factor, lo, hi)
    return rw, rh


# ---------------------------------------------------------------- boxes in each family's convention


def _check_box(box, what: str, upper: float | None) -> tuple:
    try:
        values = tuple(box)
    except TypeError:
        raise ValueError(f"{what} box must be four numbers, got {box!r}") from None
    if len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{what} box must be four numbers, got {box!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} box {box!r} is not finite")
    x1, y1, x2, y2 = values
    if min(values) < 0 or (upper is not None and max(values) > upper) or not (x1 < x2 and y1 < y2):
        bound = f"0..{upper:g}" if upper is not None else ">= 0"
        raise ValueError(f"{what} box {box!r} is not x1 < x2, y1 < y2 within {bound}")
    return values


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _resized(resized_size, fam: Family) -> tuple[int, int]:
    if resized_size is None:
        raise ValueError(
            f"{fam.display} boxes are pixels of the resized image: its (width, height) is required"
        )
    try:
        w, h = resized_size
    except (TypeError, ValueError):
        raise ValueError(f"resized size must be (width, height), got {resized_size!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in (w, h)):
        raise ValueError(f"resized size must be two positive integers, got {resized_size!r}")
    return w, h


def box_to_family(
    box, family: str | Family, resized_size=None, *, source: str = "grid"
) -> tuple[int, int, int, int]:
    """A box in the family's own numbers: the 0-1000 grid, or pixels of the resized image (Qwen2.5-VL).

    `box` is on the 0-1000 grid (`source="grid"`, MGrounding's and the converters' form) or in 0-1
    fractions of the image (`source="unit"`); the kind is never guessed from the values. Rounding is
    the project's one rule, half up (grounding.to_grid); pixels are clamped to the resized image.
    Raises ValueError for a malformed box, a missing size, or a box that collapses to zero width or height.
    """
    fam = get_family(family)
    if source not in ("grid", "unit"):
        raise ValueError(f"source must be 'grid' or 'unit', got {source!r}")
    scale = grounding.GRID if source == "grid" else 1
    values = _check_box(box, f"{source} (0-{scale})", scale)
    if fam.box_convention == GRID1000:
        out = tuple(grounding.to_grid(v, scale) for v in values)
    else:
        w, h = _resized(resized_size, fam)
        sides = (w, h, w, h)
        if source == "grid" and all(isinstance(v, int) for v in values):  # exact: no float error at .5
            out = tuple(
                min(s, (2 * v * s + scale) // (2 * scale)) for v, s in zip(values, sides, strict=True)
            )
        else:
            out = tuple(min(s, max(0, _half_up(v * s / scale))) for v, s in zip(values, sides, strict=True))
    if not (out[0] < out[2] and out[1] < out[3]):
        where = (
            f" on a {resized_size[0]}x{resized_size[1]} image" if fam.box_convention == RESIZED_PIXELS else ""
        )
        raise ValueError(f"box {tuple(box)!r} collapses to {out}{where} in {fam.display}'s convention")
    return out  # type: ignore[return-value]


def family_box_to_unit(values, family: str | Family, resized_size=None) -> tuple[float, float, float, float]:
    """The inverse of box_to_family: the family's numbers -> 0-1 fractions of the image (not clamped).

    Grid families divide by 1000; Qwen2.5-VL divides by the resized width and height of the target
    image as the model saw it. Raises ValueError for values that are not four finite numbers.
    """
    fam = get_family(family)
    vals = _check_numbers(values)
    if fam.box_convention == GRID1000:
        return tuple(v / grounding.GRID for v in vals)  # type: ignore[return-value]
    w, h = _resized(resized_size, fam)
    return (vals[0] / w, vals[1] / h, vals[2] / w, vals[3] / h)


def _check_numbers(values) -> tuple:
    try:
        vals = tuple(values)
    except TypeError:
        raise ValueError(f"box values must be four numbers, got {values!r}") from None
    if len(vals) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in vals):
        raise ValueError(f"box values must be four numbers, got {values!r}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"box values {values!r} are not finite")
    return vals


# ---------------------------------------------------------------- answers in each family's form

MAX_ANSWER_CHARS = 16_384  # model answers are 128-256 tokens; anything longer is not an answer
MAX_COORD = 999_999  # the same bound as grounding's 6-digit regexes
_MAX_NUMBER_CHARS = 24
_MAX_JSON_STARTS = 4  # bracket positions tried: keeps hostile "[[[[..." text linear


@dataclass(frozen=True)
class ParsedAnswer:
    box: tuple  # the first box, in the family's numbers (grid or resized pixels)
    label: str | None
    n_boxes: int  # well-formed boxes in the answer (the paper's rule reads a single box differently)


def format_answer(label: str | None, box, family: str | Family) -> str:
    """One object in the family's answer form (box in the family's numbers, see box_to_family)."""
    return format_answers([(label, box)], family)


def format_answers(objects: Iterable[tuple[str | None, Sequence[int]]], family: str | Family) -> str:
    """Several objects: box tokens in a row (Qwen2-VL), or Qwen2.5/3-VL's fenced JSON list as their
    cookbooks print it: ```json, one `{"bbox_2d": [...], "label": ...}` per line, tab-indented."""
    fam = get_family(family)
    upper = grounding.GRID if fam.box_convention == GRID1000 else MAX_COORD
    items = []
    for label, box in objects:
        values = _check_box(box, fam.display, upper)
        if not all(isinstance(v, int) for v in values):
            raise ValueError(f"{fam.display} answer boxes are integers, got {box!r}")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"label must be a string or None, got {label!r}")
        items.append((label, values))
    if not items:
        raise ValueError("an answer needs at least one box")
    if fam.answer_form == BOX_TOKENS:
        return "".join(
            (grounding.ref_tokens(lab) if lab else "") + grounding.box_tokens(b) for lab, b in items
        )
    lines = []
    for label, values in items:
        obj = {"bbox_2d": list(values)}
        if label:
            obj["label"] = label
        # A backtick in a label would end the fence early: \u0060 is the same JSON string.
        lines.append("\t" + json.dumps(obj, ensure_ascii=False).replace("`", "\\u0060"))
    return "```json\n[\n" + ",\n".join(lines) + "\n]\n```"


def parse_answer(text, family: str | Family) -> ParsedAnswer | None:
    """The first box of a model answer in the family's form, or None; never raises on model text.

    Box tokens: the first `(x1,y1),(x2,y2)` pair (grounding.first_pair, the official rule). JSON:
    an object or a list of objects, bare or in a ```json fence, possibly with prose around it; the
    first object with a `bbox_2d` key decides (four finite numbers in 0..999999, else None). A JSON
    answer is read after its think block (after_think): a Thinking model reasons over decoy boxes first.
    """
    fam = get_family(family)
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    if fam.answer_form == BOX_TOKENS:
        box = grounding.first_pair(text)
        if box is None:
            return None
        return ParsedAnswer(box=box, label=None, n_boxes=len(grounding.PAIR_RE.findall(text)))
    text = after_think(text)
    if text is None:
        return None
    for value in _json_values(text):
        parsed = _parsed_json(value)
        if parsed is not None:
            return parsed if parsed.n_boxes else None
    return None


THINK_START, THINK_END = "<think>", "</think>"


def after_think(text: str) -> str | None:
    """The text after the first `</think>` (vLLM's Qwen3 reasoning parser's rule; a Thinking checkpoint's
    prompt already holds the opening `<think>`, so only the closing one is looked for). None when a think
    block opens and never closes (the reasoning was cut off: it holds no answer); the text itself when
    there is no think block (an Instruct answer)."""
    _, closed, answer = text.partition(THINK_END)
    if closed:
        return answer
    return None if THINK_START in text else text


def _reject_constant(name):
    raise ValueError(f"{name} is not a coordinate")


def _bounded_int(text):
    if len(text) > _MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return int(text)


def _bounded_float(text):
    if len(text) > _MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return float(text)


_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_bounded_int, parse_float=_bounded_float
)


def _fenced_body(text: str) -> str:
    """The inside of the first ``` fence (an unclosed one runs to the end), or the whole text."""
    start = text.find("```")
    if start < 0:
        return text
    start += 3
    if text[start : start + 4].lower() == "json":
        start += 4
    end = text.find("```", start)
    return text[start:] if end < 0 else text[start:end]


def _json_values(text: str):
    """Decoded JSON values found from the first few `[` / `{` of the (fenced) text."""
    body = _fenced_body(text)
    pos, tries = 0, 0
    while tries < _MAX_JSON_STARTS:
        starts = [i for i in (body.find("[", pos), body.find("{", pos)) if i >= 0]
        if not starts:
            return
        start = min(starts)
        tries += 1
        try:
            value, end = _DECODER.raw_decode(body, start)
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        yield value
        pos = end


def _parsed_json(value) -> ParsedAnswer | None:
    """None when the value holds no bbox_2d object (look further); n_boxes 0 when the first is malformed."""
    objects = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
    candidates = [o for o in objects if isinstance(o, dict) and "bbox_2d" in o]
    if not candidates:
        return None
    boxes = [b for b in (_json_box(o.get("bbox_2d")) for o in candidates) if b is not None]
    first = _json_box(candidates[0].get("bbox_2d"))
    if first is None:
        return ParsedAnswer(box=(), label=None, n_boxes=0)
    label = candidates[0].get("label")
    return ParsedAnswer(box=first, label=label if isinstance(label, str) else None, n_boxes=len(boxes))


def _json_box(values) -> tuple | None:
    if not isinstance(values, list) or len(values) != 4:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return None
    if not all(math.isfinite(v) and 0 <= v <= MAX_COORD for v in values):
        return None
    return tuple(values)


# ---------------------------------------------------------------- which family a training run is for


def resolve_family(model: str | Path, forced: str | None = None, default: str | None = None) -> Family:
    """The family to train `model` as: `forced` (FAMILY=) if given, else its config.json's `model_type`.

    `model` is a checkpoint folder, or a Hub id whose config.json is in the local Hugging Face cache
    (nothing is downloaded). `default` is taken only when neither exists (the Makefile passes it for its
    own default BASE_MODEL, whose family it knows); otherwise UnknownFamilyError says to pass FAMILY=.
    """
    if forced:
        return get_family(forced)
    folder = Path(model)
    if (folder / "config.json").is_file():
        return detect_family(folder)
    cached = None
    if not folder.exists() and str(model).count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(model), "config.json")
        except Exception as err:  # an id huggingface_hub refuses: treated as not cached
            log.debug("%s: not looked up in the Hugging Face cache: %s", model, err)
    if isinstance(cached, str):
        return detect_family(Path(cached).parent)
    if default:
        return get_family(default)
    raise UnknownFamilyError(
        f"cannot detect the model family of {model}: no {folder / 'config.json'} (and not in the Hugging "
        f"Face cache); pass FAMILY= ({', '.join(FAMILY_CHOICES)})"
    )


def recipe_overrides(recipe: dict, family: str | Family, template: str | None = None) -> list[str]:
    """`key=value` overrides that make a recipe written for Qwen2-VL train `family`: the template and
    the pixel budget, only where they differ (a Qwen2-VL run gets none: its command line is unchanged).
    `template` replaces the family's Instruct one (training_template: a Thinking checkpoint's).

    The vision tower to freeze needs no override: LLaMA-Factory's freeze_vision_tower picks the
    family's own keys (vision_tower_keys above) from the checkpoint's model_type.
    """
    fam = get_family(family)
    wanted = {
        "template": template or fam.template,
        "image_max_pixels": fam.image_max_pixels,
        "image_min_pixels": fam.image_min_pixels,
    }
    return [f"{key}={value}" for key, value in wanted.items() if recipe.get(key) != value]


# ---------------------------------------------------------------- the data's family must be the model's

_MAX_REPORT_BYTES = 64 * 1024 * 1024


class DataFamilyError(ValueError):
    """Training data converted for another family than the model's (its boxes mean something else)."""


@dataclass(frozen=True)
class DataFormats:
    """What a data folder's converter reports (DATA_DIR/reports/*.json) say its records were written for."""

    recorded: dict[str, list[Path]]  # family -> the reports that record it
    unrecorded: list[Path]  # conversion reports from before the box format was recorded
    unreadable: list[tuple[Path, str]]  # reports that cannot be read, and why


def data_box_formats(data_dir: str | Path) -> DataFormats:
    """The box formats the converters recorded (converters.report's and trajectories' `box_format`) in
    DATA_DIR/reports/*.json and DATA_DIR/*.report.json.

    A conversion report names its `output` and `rejects` (converters.report's since the first release);
    other JSON there (the mixture reports, over records already counted) is not one. Nothing in the
    folder is trusted to be well-formed.
    """
    recorded: dict[str, list[Path]] = {}
    unrecorded: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    folder = Path(data_dir)  # `converters all` writes reports/; a single converter's --report may sit beside
    for path in sorted([*(folder / "reports").glob("*.json"), *folder.glob("*.report.json")]):
        try:
            if path.stat().st_size > _MAX_REPORT_BYTES:
                raise ValueError(f"{path.stat().st_size} bytes, not a converter report")
            report = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as err:
            unreadable.append((path, str(err)))
            continue
        if not isinstance(report, dict) or not (
            "box_format" in report or {"output", "rejects"} <= set(report)
        ):
            continue
        fmt = report.get("box_format")
        if fmt is None:
            unrecorded.append(path)
        elif isinstance(fmt, dict) and isinstance(fmt.get("family"), str) and fmt["family"] in FAMILIES:
            recorded.setdefault(fmt["family"], []).append(path)
        else:
            unreadable.append((path, f"box_format {fmt!r:.80} names no known family"))
    return DataFormats(recorded, unrecorded, unreadable)


def _names(paths: Sequence[Path], limit: int = 3) -> str:
    shown = ", ".join(f"{p.parent.name}/{p.name}" for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def check_data_family(
    data_dir: str | Path, family: str | Family, model: str | Path, forced: str | None = None
) -> list[str]:
    """Refuse (DataFamilyError) data whose recorded box format is not the model's family; the warnings
    for what cannot be told (data converted before the format was recorded, unreadable reports)."""
    fam = get_family(family)
    data_dir = Path(data_dir)
    found = data_box_formats(data_dir)
    wrong = {name: paths for name, paths in found.recorded.items() if name != fam.name}
    if wrong:
        held = "; ".join(f"--box-format {name} ({_names(paths)})" for name, paths in sorted(wrong.items()))
        why = f"FAMILY={forced}" if forced else "its config.json model_type"
        redo = f"make data DATA_ROOT=/path/holding/MGrounding-630k DATA_OUT={data_dir} BASE_MODEL={model}"
        redo += f" FAMILY={forced}" if forced else ""
        raise DataFamilyError(
            f"{data_dir} holds data converted with {held}, but {model} is a {fam.display} model ({fam.name}, "
            f"from {why}): its boxes would be learnt in the wrong convention. Convert the data for it: {redo} "
            f"(that is, python -m converters all ... --output-dir {data_dir} --box-format {fam.name}), "
            "or train a model of the data's family"
        )
    warnings = [f"{path}: cannot tell its box format ({why})" for path, why in found.unreadable]
    if found.unrecorded or not (found.recorded or found.unreadable):
        what = _names(found.unrecorded) if found.unrecorded else f"no converter report in {data_dir}/reports"
        warnings.append(
            f"{data_dir}: no record of the box format its data was converted with ({what}; data converted "
            f"before --box-format existed is Qwen2-VL's); training it as {fam.name} unchecked"
        )
    return warnings


def main(argv: list[str] | None = None) -> int:
    """`python -m families detect MODEL | train-args RECIPE --model MODEL | check-data DATA_DIR --model MODEL
    | show [FAMILY]`."""
    import argparse

    from cli import EXIT_BAD_INPUT, EXIT_OK, fail, setup_logging

    prog = "python -m families"
    parser = argparse.ArgumentParser(prog=prog, description="The base-model families' conventions.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("detect", "print the family of a checkpoint (config.json model_type)"),
        ("train-args", "print the overrides a recipe needs for the model's family"),
        ("check-data", "refuse data converted for another family than the model's; print the family"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "train-args":
            p.add_argument("recipe", type=Path)
        if name == "check-data":
            p.add_argument("data_dir", type=Path, help="the data folder (DATA_OUT, training's dataset_dir)")
        if name == "detect":
            p.add_argument("model")
        else:
            p.add_argument("--model", required=True)
        p.add_argument("--family", choices=FAMILY_CHOICES, help="force the family (FAMILY=)")
        p.add_argument("--default-family", choices=FAMILY_CHOICES, help="when the model has no config.json")
    p = sub.add_parser("show", help="print a family's conventions as JSON")
    p.add_argument("family", nargs="?", choices=FAMILY_CHOICES)
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        return int(done.code or 0)
    setup_logging("families")
    try:
        if args.command == "show":
            chosen = [get_family(args.family)] if args.family else list(FAMILIES.values())
            rows = {f.name: {**f.__dict__, "factor": f.factor} for f in chosen}
            print(json.dumps(rows, indent=2))
            return EXIT_OK
        fam = resolve_family(args.model, args.family, args.default_family)
        template, thinking = training_template(args.model, fam)
        if thinking is not None:
            log.info(
                "%s: a %s Thinking checkpoint (%s: its generation prompt opens <think>): template %s",
                args.model,
                fam.display,
                thinking.name,
                template,
            )
        if args.command == "detect":
            print(fam.name)
            return EXIT_OK
        if args.command == "check-data":
            try:
                warnings = check_data_family(args.data_dir, fam, args.model, args.family)
            except DataFamilyError as err:
                return fail(prog, err, EXIT_BAD_INPUT)
            for warning in warnings:
                log.warning("%s", warning)
            print(fam.name)
            return EXIT_OK
        import yaml

        try:
            recipe = yaml.safe_load(args.recipe.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            return fail(prog, f"cannot read recipe {args.recipe}: {err}")
        if not isinstance(recipe, dict):
            return fail(prog, f"recipe {args.recipe} is not a YAML mapping")
        overrides = recipe_overrides(recipe, fam, template)
        log.info(
            "%s: %s base model (template %s, image_max_pixels %d)%s",
            args.model,
            fam.display,
            template,
            fam.image_max_pixels,
            f"; overrides: {' '.join(overrides)}" if overrides else "; the recipe's values",
        )
        print(" ".join(overrides))
        return EXIT_OK
    except (UnknownFamilyError, ValueError) as err:
        return fail(prog, err, EXIT_BAD_INPUT)


if __name__ == "__main__":
    raise SystemExit(main())
