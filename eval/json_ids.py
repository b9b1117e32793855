"""`--answer-format think-json-ids`: MG-Thinker's JSON image-id answers, read as its RL reward reads them.

Why its own module: the answer `<think>...</think><answer>[{"image_id": k, "bbox_2d": [x1, y1, x2, y2]},
...]</answer>` names the image of every box, so the box scored is the one the answer gives for the target
image (its first object with image_id = target + 1; the first object when the record has no target), and
`image_acc` (metrics.json, per task) is the share of answers whose first object names the target image.
The answer span and its JSON are rl.mgthinker's rules (A and J, bounded, never raising on model text): an
`<answer>` inside or after an unclosed `<think>` is no answer, and boxes inside `<think>` never count.
For scoring, any positive image id parses (the record's image count is not known there); `well_formed` is
the reward's full format rule (T, A and J with ids in 1..n_images, format = 1).
"""

from __future__ import annotations

from eval.parsing import JSON_PATTERN, ParsedBox
from rl import mgthinker

NAME = "think-json-ids"
_ANY_ID = 10**6  # the id bound while scoring: ids are checked against the image count by well_formed only


def answer_text(response) -> str | None:
    """The answer span by rule A (None: no answer at all)."""
    if not isinstance(response, str) or len(response) > mgthinker.MAX_COMPLETION_CHARS:
        return None
    return mgthinker.answer_body(response)


def _objects(response, n_images: int = _ANY_ID) -> tuple[mgthinker.Prediction, ...] | None:
    body = answer_text(response)
    return None if body is None else mgthinker.parse_predictions(body, n_images)


def parse_answer(response, target_image: int | None = None) -> ParsedBox | None:
    """The box the answer gives for the target image (0-based target_image), in the model's own numbers."""
    objects = _objects(response)
    if not objects:
        return None
    if isinstance(target_image, int) and not isinstance(target_image, bool):
        objects = tuple(o for o in objects if o.image_id == target_image + 1)
        if not objects:
            return None
    return ParsedBox(objects[0].box, JSON_PATTERN, len(objects))


def named_image(response) -> int | None:
    """The 1-based image id of the answer's first object."""
    objects = _objects(response)
    return objects[0].image_id if objects else None


def well_formed(response, n_images: int) -> bool:
    """MG-Thinker's format rule in full: T, A and J (format 1.0 in rl.mgthinker)."""
    if not isinstance(response, str) or len(response) > mgthinker.MAX_COMPLETION_CHARS:
        return False
    return mgthinker.think_ok(response) and _objects(response, max(1, n_images)) is not None
