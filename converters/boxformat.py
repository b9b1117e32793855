"""`--box-format`: rewrite checked Qwen2-VL-form records into another family's own form.

Why: every source is converted to Qwen2-VL's form first (MGrounding's own: box tokens on the 0-1000
grid) and checked there; a base model of another family must then see its own conventions, or it
learns boxes it will never be asked for (families/: Qwen2.5-VL boxes are pixels of the image *as
LLaMA-Factory 0.9.5 feeds it*, Qwen3-VL boxes stay on the grid; both answer in JSON `bbox_2d`).
One rewrite after the checks keeps every converter's contract unchanged:

- a turn that is only boxes (with their `<|object_ref_start|>` names) becomes the family's answer
  (families.format_answers: the JSON families' fenced list); a box inside prose becomes the family's
  inline box in place (Family.inline_box: one `{"bbox_2d": [...], "label": ...}` object, InternVL's
  `<ref>label</ref><box>[[...]]</box>`), so "Image-2: <box>" keeps saying which image;
- MIG-Bench's format instruction ("Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. ...") becomes the
  family's native one (families.Family.grounding_suffix); object-ref tokens around names are dropped;
- Qwen2.5-VL pixels need the box's image: when the record's images resize to different sizes, the
  image is read from the text (trajectories.locate, the rule the RL sets use); a box it cannot place
  is rejected (`unknown_box_image`), never guessed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import families
from core.grounding import BOX_TOKENS_RE, FORMAT_INSTRUCTION_RE, OBJECT_ID_RE, REF_END, REF_START

from .locate import locate
from .records import Rejected

log = logging.getLogger(__name__)

DEFAULT = families.DEFAULT_FAMILY  # MGrounding's own form: records are written exactly as checked
REASONS = {
    "unknown_box_image": "a box whose image cannot be told: the images resize to different sizes and "
    "the text names none (Qwen2.5-VL boxes are pixels of one image)",
    "unresizable_image": "an image LLaMA-Factory cannot resize (aspect ratio too extreme)",
    "box_collapses": "a box that becomes zero-width or zero-height in the family's pixels",
}
_REF_BOX_RE = re.compile(
    r"(?:" + re.escape(REF_START) + r"(?P<label>[^<]*?)" + re.escape(REF_END) + r"\s*)?"
    r"(?P<box>" + BOX_TOKENS_RE.pattern + r")"
)
_REF_TOKEN_RE = re.compile(re.escape(REF_START) + "|" + re.escape(REF_END))
_ONLY_SEPARATORS = re.compile(r"[\s,;.]*")


@dataclass(frozen=True)
class BoxFormat:
    """The target family and the pixel budget its boxes are computed for (Qwen2.5-VL only uses it)."""

    family: families.Family
    image_max_pixels: int
    image_min_pixels: int
    processor_min_pixels: int
    processor_max_pixels: int

    @property
    def is_default(self) -> bool:
        return self.family.name == DEFAULT

    @property
    def needs_sizes(self) -> bool:
        return self.family.boxes_need_canvas

    def stamp(self) -> dict:
        """What the outputs depend on; empty for the default, so existing up-to-date stamps stay valid."""
        if self.is_default:
            return {}
        out = {"box_format": self.family.name}
        if self.needs_sizes:
            out["pixels"] = [
                self.image_min_pixels,
                self.image_max_pixels,
                self.processor_min_pixels,
                self.processor_max_pixels,
            ]
        return out

    def describe(self) -> dict:
        """The report's `box_format` entry."""
        out = {
            "family": self.family.name,
            "boxes": self.family.box_convention,
            "answers": self.family.answer_form,
        }
        if self.needs_sizes:
            out.update(
                image_max_pixels=self.image_max_pixels,
                image_min_pixels=self.image_min_pixels,
                processor_pixels=[self.processor_min_pixels, self.processor_max_pixels],
            )
        return out

    def resized(self, size: tuple[int, int]) -> tuple[int, int]:
        """(w, h) of an image of `size` as LLaMA-Factory 0.9.5 feeds it in training."""
        return families.training_resized_size(
            size[0],
            size[1],
            self.image_max_pixels,
            self.image_min_pixels,
            self.family,
            self.processor_min_pixels,
            self.processor_max_pixels,
        )


def make_box_format(
    name: str = DEFAULT,
    image_max_pixels: int | None = None,
    image_min_pixels: int | None = None,
    base_model=None,
) -> BoxFormat:
    """A BoxFormat from the CLI's values; defaults are the family's budget and released processor.

    `base_model` (a checkpoint folder) supplies its processor's pixel range, and must be of the family
    asked for: converting for one family and training another is the silent error this guards against.
    Raises ValueError with the option at fault.
    """
    fam = families.get_family(name)
    hi = fam.image_max_pixels if image_max_pixels is None else image_max_pixels
    lo = fam.image_min_pixels if image_min_pixels is None else image_min_pixels
    for flag, value in (("--image-max-pixels", hi), ("--image-min-pixels", lo)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    if lo > hi:
        raise ValueError(f"--image-min-pixels {lo} is above --image-max-pixels {hi}")
    p_lo, p_hi = fam.processor_min_pixels, fam.processor_max_pixels
    if base_model is not None:
        try:
            detected = families.detect_family(base_model)
        except families.UnknownFamilyError:  # a model_type we do not know: the user chose the family
            detected = fam
        if detected.name != fam.name:
            raise ValueError(
                f"--base-model {base_model} is {detected.display} (config.json), but --box-format is "
                f"{fam.name}: convert with --box-format {detected.name}"
            )
        p_lo, p_hi = families.processor_pixel_range(base_model)
    return BoxFormat(fam, hi, lo, p_lo, p_hi)


@lru_cache(maxsize=65536)
def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header, as PIL opens it for LLaMA-Factory (no EXIF rotation)."""
    from PIL import Image

    if not os.path.isfile(path):
        raise Rejected("missing_image", f"{path}: not a file (its size is needed for pixel boxes)")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as err:  # PIL raises many types for bad data (UnidentifiedImageError is an OSError)
        raise Rejected("undecodable_image", f"{path}: {type(err).__name__}: {err}") from None


def _family_box(fmt: BoxFormat, grid_box, size: tuple[int, int] | None, where: str):
    try:
        return families.box_to_family(grid_box, fmt.family, size)
    except ValueError as err:
        raise Rejected("box_collapses", f"{where}: {err}") from None


def rewrite_text(
    text: str, fmt: BoxFormat, size_of: Callable[[int], tuple[int, int] | None], where: str
) -> tuple[str, bool]:
    """(text in the family's form, whether it held boxes). `size_of(k)` is the resized size of the
    k-th box's image (None for grid families); the text's format instruction is left to the caller."""
    matches = list(_REF_BOX_RE.finditer(text))
    if not matches:
        return _REF_TOKEN_RE.sub("", text), False
    objects = []
    for k, m in enumerate(matches):
        grid = tuple(int(v) for v in m.groups()[2:6])
        label = (m.group("label") or "").strip() or None
        objects.append((label, _family_box(fmt, grid, size_of(k), f"{where}, box {k + 1} {grid}")))
    rest = _REF_BOX_RE.sub("", text)
    if _ONLY_SEPARATORS.fullmatch(rest):
        return families.format_answers(objects, fmt.family), True
    pieces, pos = [], 0
    for m, (label, box) in zip(matches, objects, strict=True):
        pieces.append(text[pos : m.start()])
        pieces.append(fmt.family.inline_box(label, box))  # the family's inline form
        pos = m.end()
    pieces.append(text[pos:])
    return _REF_TOKEN_RE.sub("", "".join(pieces)), True


def native_instruction(question: str, fmt: BoxFormat) -> str:
    """MIG-Bench's box-token instruction replaced by the family's own (only where there is one)."""
    if "(x1" not in question:
        return question
    return FORMAT_INSTRUCTION_RE.sub(lambda m: fmt.family.grounding_suffix, question, count=1)


class _Sizes:
    """Resized sizes of a record's images, read once; `single` when they are all the same."""

    def __init__(self, fmt: BoxFormat, images: Sequence[str]):
        self.sizes: list[tuple[int, int]] = []
        for j, path in enumerate(images):
            original = image_size(path)
            try:
                self.sizes.append(fmt.resized(original))
            except ValueError as err:
                raise Rejected("unresizable_image", f"image {j + 1} {path}: {err}") from None
        distinct = set(self.sizes)
        self.single = self.sizes[0] if len(distinct) == 1 else None

    def of(self, image: int | None, where: str, box) -> tuple[int, int]:
        if self.single is not None:
            return self.single
        if image is None or not 1 <= image <= len(self.sizes):
            listed = ", ".join(f"{w}x{h}" for w, h in self.sizes)
            said = "names no image" if image is None else f"names image {image}"
            raise Rejected(
                "unknown_box_image",
                f"{where}: box {box} — the text {said} of {len(self.sizes)} and they resize to {listed}",
            )
        return self.sizes[image - 1]


def rewrite_record(record: dict, fmt: BoxFormat) -> dict:
    """A checked (Qwen2-VL-form) record in the family's form; the record itself when fmt is the default.

    Raises Rejected (a reason of REASONS, or missing_image / undecodable_image for an image whose size
    is needed) when a box cannot be written in the family's convention.
    """
    if fmt.is_default:
        return record
    turns = record["conversations"]
    sizes = _Sizes(fmt, record["images"]) if fmt.needs_sizes and record["images"] else None
    out_turns = []
    for k in range(0, len(turns), 2):
        question, answer = turns[k]["value"], turns[k + 1]["value"]
        q_images = a_images = None
        if sizes is not None and sizes.single is None and "<|box_start|>" in question + answer:
            found = locate(question, answer, len(record["images"]))
            q_images = [b.image for b in found.context]
            a_images = [b.image for b in found.targets]
        turn = k // 2 + 1
        texts = []
        for role, text, placed in (("question", question, q_images), ("answer", answer, a_images)):
            where = f"turn {turn} {role}"

            def size_of(j, placed=placed, where=where):
                if sizes is None:
                    return None
                return sizes.of(placed[j] if placed is not None and j < len(placed) else None, where, j + 1)

            texts.append(rewrite_text(text, fmt, size_of, where)[0])
        out_turns.append({"from": turns[k]["from"], "value": native_instruction(texts[0], fmt)})
        out_turns.append({"from": turns[k + 1]["from"], "value": texts[1]})
    return {**record, "conversations": out_turns}


def rewrite_trajectory_turn(text: str, fmt: BoxFormat, images: Sequence[str], context_images=None) -> str:
    """A trajectory or RL turn in the family's form: each box's image is the N of the `[N-M]` just before
    it (`context_images` gives them for the question's boxes, which carry no id)."""
    if fmt.is_default:
        return text
    sizes = _Sizes(fmt, images) if fmt.needs_sizes else None
    starts = [m.start() for m in _REF_BOX_RE.finditer(text)]
    ids = list(OBJECT_ID_RE.finditer(text))

    def size_of(k):
        if sizes is None:
            return None
        if context_images is not None:
            image = context_images[k] if k < len(context_images) else None
        else:
            before = [m for m in ids if m.end() <= starts[k]]
            image = int(before[-1].group(1)) if before else None
        return sizes.of(image, "trajectory", k + 1)

    return rewrite_text(text, fmt, size_of, "trajectory")[0]


def target_fields(grid_box, image: int, images: Sequence[str], fmt: BoxFormat) -> dict:
    """Extra RL-record fields: the target box in the family's numbers (and the resized size it is in)."""
    if fmt.is_default:
        return {}
    out: dict = {"box_format": fmt.family.name}
    size = None
    if fmt.needs_sizes:  # every image's, in order: rl/rewards.py reads the target's (image_index - 1)
        sizes = _Sizes(fmt, images).sizes
        size = sizes[image - 1]
        out["resized_sizes"] = [list(s) for s in sizes]
    out["family_box"] = list(_family_box(fmt, grid_box, size, "target"))
    return out
