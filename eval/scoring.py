"""Scoring: box normalisation, the Migician rescale, IoU and the per-task metrics.

Why its own module: scoring must give the paper's numbers on the same outputs
whatever produced them (vLLM, transformers, a server), and must import in both
environments without a model stack. Quirks of the paper's script that change
scores are kept on purpose and named where they happen.
"""

from __future__ import annotations

import math

from core import grounding
from eval import answers
from eval.parsing import JSON_PATTERN, ParsedBox, parse_box  # noqa: F401 - parse_box: part of this module's API

THRESHOLDS = (0.5, 0.3, 0.7)
METRIC_KEYS = ("n", "acc@0.5", "acc@0.3", "acc@0.7", "miou")

# Coordinate conventions: how the numbers a model writes map to 0-1 boxes.
COORDS = {
    "grid1000": "paper rule: a value >= 1 is on the 0-1000 grid and divided by 1000, else already 0-1",
    "resized-pixels": "absolute pixels of the target image as the model saw it (Qwen2.5-VL): "
    "x / resized width, y / resized height",
    "original-pixels": "absolute pixels of the target image file: x / width, y / height",
}
RESCALES = ("none", "migician")


def normalise(parsed: ParsedBox | None, coords: str = "grid1000", size=None) -> list[float] | None:
    """Map a parsed box to 0-1 coordinates; None when there is no box or no size to divide by."""
    if parsed is None:
        return None
    vals = list(parsed.values)
    if coords == "grid1000" and parsed.pattern == JSON_PATTERN:
        # Qwen3-VL's JSON is always on the grid: the paper's "< 1 is already 0-1" rule is not its.
        return [v / 1000 for v in vals]
    if coords == "grid1000":
        # The paper's extract_bbox uses `>= 1` when one box is found and `> 1` when several are:
        # a value of exactly 1 in a multi-box answer stays 1.0. Kept for identical scores.
        if parsed.n_matches == 1:
            return [v / 1000 if v >= 1 else v for v in vals]
        return [v / 1000 if v > 1 else v for v in vals]
    if coords in ("resized-pixels", "original-pixels"):
        if not size:
            return None
        w, h = float(size[0]), float(size[1])
        if w <= 0 or h <= 0:
            return None
        return [vals[0] / w, vals[1] / h, vals[2] / w, vals[3] / h]
    raise ValueError(f"unknown coordinate convention {coords!r}; choose from {sorted(COORDS)}")


def rescale_migician(box: list[float] | None, n_matches: int) -> list[float] | None:
    """The paper script's downward shift for Migician: y1 *= 1.05, y2 *= 1.10, capped at 0.999.

    The script applies it inside a try/except that silently skips answers with
    several boxes (it indexes a list of boxes), so only single-box answers move.
    """
    if box is None or n_matches != 1:
        return box
    out = list(box)
    out[1] = round(min(out[1] * 1.05, 0.999), 3)
    out[3] = round(min(out[3] * 1.10, 0.999), 3)
    return out


def iou(gt, pred) -> float:
    """IoU of the ground truth and a prediction: the pack's one IoU (grounding.box_iou); 0 for no box."""
    return grounding.box_iou(gt, pred)


def score_response(
    response,
    answer,
    coords: str = "grid1000",
    size=None,
    rescale: str = "none",
    answer_format: str = "official",
    target_image: int | None = None,
) -> dict:
    """Parse, normalise, optionally rescale and compare one response with its answer box.

    answer_format "think" parses only the first <answer>...</answer> span, "json" / "think-json" read
    bbox_2d JSON (eval.answers); `coords` says what the numbers are (the family's convention).
    target_image (0-based): the image whose box an image-id answer (think-json-ids) is scored on."""
    parsed = answers.parse_answer(response, answer_format, target_image)
    if parsed is not None and not all(math.isfinite(v) for v in parsed.values):
        parsed = None  # a 400-digit "integer" is inf: no box (IoU 0), so metrics.json never holds NaN
    box = normalise(parsed, coords, size)
    if box is not None and not all(math.isfinite(v) for v in box):
        box = None
    if rescale == "migician" and parsed is not None:
        box = rescale_migician(box, parsed.n_matches)
    elif rescale not in RESCALES:
        raise ValueError(f"unknown rescale {rescale!r}; choose from {RESCALES}")
    return {
        "parsed": list(parsed.values) if parsed else None,
        "pattern": parsed.pattern if parsed else None,
        "box": box,
        "iou": iou(answer, box),
    }
