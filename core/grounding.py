"""Qwen2-VL's box grid, box tokens, object-reference tokens and the regexes that read them.

Why one module: converters, the demo, eval and the RL rewards all write or read
`<|box_start|>(x1,y1),(x2,y2)<|box_end|>` on the 0-1000 grid; two copies had
already drifted into two rounding rules. The rule here is **round half up**
(floor(v * 1000 / size + 0.5), clamped to 0..1000): it is deterministic and
symmetric on both axes, so a box and its mirror image land on mirrored grid
values, which Python's round() (half to even) does not guarantee.

Model text is untrusted: every regex here bounds its numbers (at most 6 digits),
so a 5,000-digit run cannot reach int() and no pattern backtracks badly.
"""

from __future__ import annotations

import math
import re

GRID = 1000
BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"
REF_START, REF_END = "<|object_ref_start|>", "<|object_ref_end|>"
BBOX_ID_START, BBOX_ID_END = "<bbox_id>", "</bbox_id>"
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")

_NUM = r"(\d{1,6})"
# "(x1,y1),(x2,y2)" in integers, spaces allowed, with or without the box tokens around it.
PAIR_RE = re.compile(rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)")
# A whole box token span whose body is exactly one integer pair (converters' strict check).
BOX_TOKENS_RE = re.compile(rf"<\|box_start\|>\s*{PAIR_RE.pattern}\s*<\|box_end\|>")
# Any box token span, whatever its body (to find malformed ones).
BOX_SPAN_RE = re.compile(r"<\|box_start\|>(.*?)<\|box_end\|>", re.DOTALL)
# The answer-format instruction MIG-Bench appends to questions (the paper script's spelling ends in
# <|box_start|>, later releases in <|box_end|>): placeholder names, not a box.
FORMAT_TEMPLATE_RE = re.compile(r"<\|box_start\|>\(x1,\s*y1\),\s*\(x2,\s*y2\)<\|box_(?:start|end)\|>")
# That instruction as a whole, with or without its "Format:" lead, its box tokens (the tokenless
# "Format:(x1,y1),(x2,y2)." that the demo's records carry) and its closing sentence (spelled either way):
# the converters put the family's own instruction in its place, trajectories take it out.
FORMAT_INSTRUCTION_RE = re.compile(
    r"\s*(?:Format:\s*)?(?:<\|box_start\|>)?\(x1,\s*y1\),\s*\(x2,\s*y2\)(?:<\|box_(?:start|end)\|>)?\.?"
    r"(?:\s*Don't generate add?i?tional words\.?)?",
    re.IGNORECASE,
)
# MIRG-RL's object identifier "[N-M]" (image N, object M, 1-based), with or without <bbox_id> tags.
OBJECT_ID_RE = re.compile(r"\[\s*(\d{1,3})\s*-\s*(\d{1,3})\s*\]")
# "Image 2", "image-2", "Picture2" (any case).
IMAGE_NAME_RE = re.compile(r"\b(?:image|picture)[ \-]?(\d{1,3})\b", re.IGNORECASE)


def to_grid(value: float, size: float) -> int:
    """One pixel coordinate -> the 0-1000 grid: round half up, clamped (the project's one rule)."""
    scaled = value * GRID / size if size > 0 and math.isfinite(size) else math.nan
    if not math.isfinite(scaled):  # NaN, infinite, or 1e306 that overflows when scaled
        raise ValueError(f"cannot put coordinate {value!r} of a side of {size!r} pixels on the grid")
    return min(GRID, max(0, math.floor(scaled + 0.5)))


def pixel_box_to_grid(box, width: float, height: float) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) in pixels of a width x height image -> the 0-1000 grid."""
    x1, y1, x2, y2 = box
    return (to_grid(x1, width), to_grid(y1, height), to_grid(x2, width), to_grid(y2, height))


def on_grid(box) -> bool:
    """True for integers with 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000."""
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= GRID and 0 <= y1 < y2 <= GRID


def box_tokens(box) -> str:
    """`<|box_start|>(x1,y1),(x2,y2)<|box_end|>` for a grid box."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return f"{BOX_START}({x1},{y1}),({x2},{y2}){BOX_END}"


def ref_tokens(text: str) -> str:
    return f"{REF_START}{text}{REF_END}"


def object_id(image: int, index: int) -> str:
    """MIRG-RL's `[N-M]` identifier (1-based image and object numbers)."""
    return f"[{image}-{index}]"


def first_pair(text: str) -> tuple[int, int, int, int] | None:
    """The first `(x1,y1),(x2,y2)` integer pair in `text` (tokens around it optional), or None."""
    match = PAIR_RE.search(text)
    return tuple(int(v) for v in match.groups()) if match else None  # type: ignore[return-value]


def first_image_index(text: str) -> int | None:
    """The image a text names: the N of its first `[N-M]`, else of its first `Image N`/`Picture N`."""
    match = OBJECT_ID_RE.search(text)
    if match:
        return int(match.group(1))
    match = IMAGE_NAME_RE.search(text)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- reasoning answers (RL rewards, eval --answer-format think)

THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"
_REASONING_TAGS = (THINK_START, THINK_END, ANSWER_START, ANSWER_END)


def answer_span(text) -> str | None:
    """The text inside the first `<answer>...</answer>` outside every `<think>...</think>` block, or None.

    Why outside: a reasoning model names decoy boxes and images while it thinks, and an `<answer>` written
    inside `<think>` is part of that reasoning (`<think><answer>TRUTH</answer></think><answer>X</answer>`
    is answered X). A `<think>` that never closes runs to the end of the text: nothing after it is an
    answer. Why str.find and not a lazy regex: `<answer>(.*?)</answer>` rescans to the end of the text for
    every unclosed tag, which is quadratic on hostile model text; this is one linear pass.
    """
    if not isinstance(text, str):
        return None
    pos = 0
    while True:
        start = text.find(ANSWER_START, pos)
        if start < 0:
            return None
        think = text.find(THINK_START, pos, start)
        if think < 0:
            break
        closed = text.find(THINK_END, think + len(THINK_START))
        if closed < 0:
            return None
        pos = closed + len(THINK_END)
    start += len(ANSWER_START)
    end = text.find(ANSWER_END, start)
    return text[start:end] if end >= 0 else None


def think_then_answer(text) -> tuple[str, str] | None:
    """(think body, answer body) when the whole text is one `<think>...</think>` then one
    `<answer>...</answer>` (whitespace around them allowed, nothing else, no tag inside a body); else None.

    Bodies may be blank: whether that is allowed is the caller's rule.
    """
    if not isinstance(text, str):
        return None
    body = text.strip()
    if not (body.startswith(THINK_START) and body.endswith(ANSWER_END)):
        return None
    think_end = body.find(THINK_END)
    if think_end < 0:
        return None
    think = body[len(THINK_START) : think_end]
    rest = body[think_end + len(THINK_END) :].lstrip()
    if not rest.startswith(ANSWER_START) or len(rest) < len(ANSWER_START) + len(ANSWER_END):
        return None
    answer = rest[len(ANSWER_START) : -len(ANSWER_END)]
    if any(tag in think or tag in answer for tag in _REASONING_TAGS):
        return None
    return think, answer


def mirg_well_formed(text, num_images: int, read_box) -> bool:
    """MIRG-RL's format rule: one non-blank think then one non-blank answer and nothing else, the answer's
    first box on the grid with x1 < x2 and y1 < y2, and an image index in the answer when there are
    several images. eval's `well_formed` (think answers) reads the box with the run's own parse
    (`read_box(answer) -> values or None`), so InternVL's `<box>[[...]]</box>` counts as the score does.

    The image index must name an image the sample has (`names_an_image`): `[0-0]` or `[999-1]` with two
    images is not well formed (a decision of this pack: an index to no image is no index)."""
    parts = think_then_answer(text)
    if parts is None or not parts[0].strip() or not parts[1].strip():
        return False
    box = read_box(parts[1])
    if box is None or not on_grid(box):
        return False
    return names_an_image(parts[1], num_images)


def names_an_image(answer: str, num_images: int) -> bool:
    """With one image, always; with several, the answer's first image index is one of them (1..n)."""
    if num_images <= 1:
        return True
    index = first_image_index(answer)
    return index is not None and 1 <= index <= num_images


# ---------------------------------------------------------------- teacher text (datagen)

# "(x1,y1),(x2,y2)" with the comma between the two points optional: the Migician appendix's own QA
# example writes "(245,784)(456,924)". Numbers bounded as in PAIR_RE.
LOOSE_PAIR_RE = re.compile(rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,?\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)")


def box_iou(a, b) -> float:
    """The pack's one IoU of two (x1, y1, x2, y2) boxes, areas (x2-x1)*(y2-y1): 0.0 when either box is
    missing, shorter than four values, empty or inverted (x2 <= x1 or y2 <= y1), or when they do not
    overlap. Eval, the RL rewards, datagen and the converters all call this one."""
    if a is None or b is None or len(a) < 4 or len(b) < 4:
        return 0.0
    ax1, ay1, ax2, ay2 = a[:4]
    bx1, by1, bx2, by2 = b[:4]
    if ax2 <= ax1 or ay2 <= ay1 or bx2 <= bx1 or by2 <= by1:
        return 0.0
    ix = min(ax2, bx2) - max(ax1, bx1)
    iy = min(ay2, by2) - max(ay1, by1)
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return float(inter / union)
