"""The outcome of each grounding instance: hit, miss, wrong_image or unparsed.

Why: Acc@0.5 says how often the model is right, not how it is wrong. An answer that did not parse,
a box on the right image beside the object and the right object in the wrong image are three
different problems (a prompt or parser problem, a localisation one, a multi-image one), and the
field's open questions (scores that do not reproduce, coordinate mix-ups) are settled by telling them
apart. One rule, used by `eval run` (each predictions line) and `eval score` (metrics.json), by the
viewer and by `eval diff`:

- `unparsed`: no box was read under the run's answer format (a skipped instance too);
- `hit`: IoU >= 0.5 with the answer box, exactly the official Acc@0.5 count (the box is scored on
  the target image whatever image the answer names, as the paper's script does), so Acc@0.5 = hits / n;
- `wrong_image`: not a hit, and the answer names an image that is not the target
  (eval.answers.named_image: `[N-M]`, `Image N`, JSON `image_id`; 1-based);
- `miss`: not a hit, a box was read, in the target image or with no image named (or no known target).
"""

from __future__ import annotations

from collections.abc import Iterable

from eval import answers

OUTCOMES = ("hit", "miss", "wrong_image", "unparsed")
FAILURES = ("wrong_image", "miss", "unparsed")  # the viewer's order: failures first, then hits
HIT_IOU = 0.5  # inclusive, like the official threshold (eval.scoring.THRESHOLDS[0])


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def classify(rec: dict, answer_format: str) -> str:
    """The outcome of one scored record (its `parsed` and `iou` from eval.scoring.score_response)."""
    if rec.get("skipped") or rec.get("parsed") is None:
        return "unparsed"
    if float(rec.get("iou") or 0.0) >= HIT_IOU:
        return "hit"
    target = rec.get("target_image")
    named = answers.named_image(rec.get("response"), answer_format)
    if named is not None and _is_int(target) and named != target + 1:
        return "wrong_image"
    return "miss"


def named_image_index(rec: dict, answer_format: str) -> int | None:
    """The 0-based image a record's answer names, when it is one of the instance's images (else None)."""
    named = answers.named_image(rec.get("response"), answer_format)
    n = len(rec.get("images") or []) or rec.get("n_images") or 0
    return named - 1 if named is not None and 1 <= named <= n else None


def counts(records: Iterable[dict]) -> dict[str, dict[str, int]]:
    """Per task: {hit, miss, wrong_image, unparsed} of records already classified (their `outcome`)."""
    out: dict[str, dict[str, int]] = {}
    for rec in records:
        c = out.setdefault(rec.get("task"), dict.fromkeys(OUTCOMES, 0))
        c[rec["outcome"]] += 1
    return out
