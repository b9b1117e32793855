"""`datagen trajectories --filter-against PREDICTIONS.jsonl`: keep a CoT trace only when reasoning helps.

Why: MG-Thinker (issue 22) kept a teacher's reasoning only where it beats the direct model's answer
on the same question: a correct direct prediction that gains >= 0.10 IoU with reasoning, a wrong one
that reasoning fixes, or a wrong one that gains >= 0.20 IoU. Reasoning that adds nothing teaches the
model to spend tokens for no gain. The direct model's answers come from an `eval run` of it on a bench
built from the same records, in the same order: a prediction's `index` (the eval's key) is the
position of its record in `--input`, and its `iou` is the evaluator's own score (Acc@0.5's IoU).
"Correct" is IoU >= 0.5, MIG-Bench's threshold; the reasoning's IoU is that of the CoT answer's box,
0 when it names another image.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

CORRECT_IOU = 0.5
CORRECT_GAIN = 0.10  # a correct direct answer is kept when reasoning adds this much IoU
WRONG_GAIN = 0.20  # a wrong one that reasoning does not fix, when it adds this much
KEPT = {
    "correct_gain": f"direct correct, reasoning adds >= {CORRECT_GAIN:.2f} IoU",
    "fixed": "direct wrong, reasoning correct",
    "wrong_gain": f"direct wrong, reasoning still wrong but adds >= {WRONG_GAIN:.2f} IoU",
}
DROPPED = {
    "no_gain_correct": f"direct correct, reasoning adds < {CORRECT_GAIN:.2f} IoU",
    "no_gain_wrong": f"direct wrong, reasoning neither fixes it nor adds {WRONG_GAIN:.2f} IoU",
    "no_direct_prediction": "the predictions file has no scored answer for this record",
}
MAX_LINE_BYTES = 1 << 20


class PredictionsError(ValueError):
    """A predictions file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Direct:
    iou: float
    images: tuple[str, ...]


def verdict(direct_iou: float, cot_iou: float) -> tuple[bool, str]:
    """(keep, reason): the rule above; reason is a key of KEPT or DROPPED."""
    gain = cot_iou - direct_iou
    if direct_iou >= CORRECT_IOU:
        return (True, "correct_gain") if gain >= CORRECT_GAIN - 1e-9 else (False, "no_gain_correct")
    if cot_iou >= CORRECT_IOU:
        return True, "fixed"
    return (True, "wrong_gain") if gain >= WRONG_GAIN - 1e-9 else (False, "no_gain_wrong")


def _names(images) -> tuple[str, ...]:
    return tuple(Path(p).name for p in images)


def load_predictions(path: str | Path) -> dict[int, Direct]:
    """index -> the direct model's scored answer; skipped instances are absent (no answer to beat).

    Raises PredictionsError for a missing file, a line that is not a JSON object, or an index or iou
    that is not a number; a later line for the same index replaces the earlier (a resumed run)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"--filter-against {path}: no such file (an `eval run` predictions.jsonl)")
    out: dict[int, Direct] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"--filter-against {path} line {lineno}"
            if len(raw) > MAX_LINE_BYTES:
                raise PredictionsError(f"{where}: longer than {MAX_LINE_BYTES} bytes")
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                raise PredictionsError(f"{where}: not JSON ({err})") from None
            if not isinstance(rec, dict):
                raise PredictionsError(f"{where}: not a JSON object")
            if rec.get("skipped"):
                continue
            index, iou, images = rec.get("index"), rec.get("iou"), rec.get("images")
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise PredictionsError(f"{where}: index {index!r} is not a non-negative integer")
            if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not math.isfinite(iou):
                raise PredictionsError(f"{where}: iou {iou!r} is not a number (score the run first)")
            if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
                raise PredictionsError(f"{where}: no images list")
            out[index] = Direct(min(1.0, max(0.0, float(iou))), _names(images))
    if not out:
        raise PredictionsError(f"--filter-against {path}: no scored prediction in it")
    return out


def direct_for(predictions: dict[int, Direct], index: int, images, sample_id: str) -> Direct | None:
    """The prediction for input record `index`, checked to be on the same images (file names)."""
    direct = predictions.get(index)
    if direct is not None and direct.images != _names(images):
        raise PredictionsError(
            f"--filter-against: the prediction for index {index} is on images {list(direct.images)[:6]}, "
            f"but input record {index} ({sample_id}) has {list(_names(images))[:6]}: the eval run must be "
            "on a bench built from the same records in the same order"
        )
    return direct
