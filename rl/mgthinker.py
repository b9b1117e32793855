"""MG-Thinker's rewards (profile `mgthinker`): format + image id + IoU over several targets, one-to-one.

Why its own module: MG-Thinker's answer is a JSON list of objects with image ids, scored against every
target of a record at once (a one-to-one Hungarian match), while rl/rewards.py's profiles read one box
against one target. rl/rewards.py lists the profile (its components and default weights 1/1/1, so
`--weights`, `reward_weights` and the logs treat it like the others); this module does the scoring:
`score` for one completion, `reward_functions` for TRL. rewards.score() does not score this profile.

The rules (issue #22, item 3), each component in [0, 1], total = weighted sum:
- Answer form `<think>...</think><answer>JSON</answer>`, JSON a list of
  `{"image_id": k, "bbox_2d": [x1, y1, x2, y2], "label": ...}`, ids 1-based, boxes in the family's numbers
  (Qwen2-VL / Qwen3-VL: the 0-1000 grid; Qwen2.5-VL: pixels of image k as training fed it, divided by
  `resized_sizes[k - 1]`). Ground truth is on the 0-1000 grid for every family, as in rl/rewards.py.
- format = 0.25*T + 0.25*A + 0.5*J. T: exactly one `<think>` and one `</think>`, in that order. A: exactly
  one `<answer>` and one `</answer>`, in order, only whitespace after `</answer>`, and not inside a think
  block: every think tag comes before `<answer>` and the last `<think>` before it is closed (when T holds
  this is "after `</think>`"; the issue's rule says so only under T, this pack also refuses an answer
  after a `<think>` that never closes). Without A there is no answer span and no prediction. J: the span
  (optionally one ```json fence) is a JSON list of 1..16 objects, each with an integer (not bool)
  `image_id` in 1..num_images and a `bbox_2d` of 4 finite numbers with x1 < x2 and y1 < y2; without J,
  no prediction.
- g(u) = 1 if u >= 0.9, u if 0.1 <= u < 0.9, 0 if u < 0.1 (u the plain IoU on the grid).
- n targets, m predictions: a pair is worth 1 + g(IoU) when the ids agree, else 0; the one-to-one
  assignment with the largest total (Hungarian, scipy's linear_sum_assignment) decides.
  image = (id-agreeing matched pairs) / n * min(1, n/m), iou = (sum of their g) / n * min(1, n/m).
  The min(1, n/m) factor is this pack's guard (the paper does not state one): answering m > n boxes to
  catch the targets is paid for in proportion, so spraying 16 boxes over one target scores at most 1/16.

Completions are untrusted model text: anything that is not a string (or TRL's conversational form)
scores 0, text over MAX_COMPLETION_CHARS or an answer span over MAX_ANSWER_CHARS is not read, numbers are
bounded in length, NaN/Infinity are refused, a nesting too deep for the JSON decoder (RecursionError) is
no answer, and nothing here raises on model text. Ground truth is trusted: a malformed target, num_images
or resized_sizes raises ValueError naming it.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

import families
from core import grounding
from rl import rewards

PROFILE = "mgthinker"  # its entry in rl.rewards.PROFILES
MAX_COMPLETION_CHARS = rewards.MAX_COMPLETION_CHARS
MAX_ANSWER_CHARS = 16_384  # 16 objects of ~80 characters are ~1.3k; anything 10x that is not an answer
MAX_OBJECTS = 16
_MAX_NUMBER_CHARS = 32

THINK_START, THINK_END = grounding.THINK_START, grounding.THINK_END
ANSWER_START, ANSWER_END = grounding.ANSWER_START, grounding.ANSWER_END


@dataclass(frozen=True)
class Prediction:
    image_id: int
    box: tuple[float, float, float, float]  # in the family's numbers, as the model wrote them


@dataclass(frozen=True)
class Target:
    image_index: int  # 1-based
    box: tuple[float, float, float, float]  # on the 0-1000 grid


@dataclass(frozen=True)
class Match:
    """One completion scored against all its targets; rl.rewards.PROFILES["mgthinker"] reads the fields."""

    format: float
    image: float
    iou: float
    predictions: int  # m (0 when there is no prediction)
    pairs: tuple[tuple[int, int, float], ...]  # (target, prediction, g) of the id-agreeing matched pairs


# ---------------------------------------------------------------- the answer form


def g(u: float) -> float:
    """MG-Thinker's IoU reward: 1 at >= 0.9, the IoU itself from 0.1 to 0.9, 0 below 0.1."""
    if u >= 0.9:
        return 1.0
    return float(u) if u >= 0.1 else 0.0


def think_ok(text: str) -> bool:
    """T: exactly one <think> and one </think>, in that order."""
    return (
        text.count(THINK_START) == 1
        and text.count(THINK_END) == 1
        and text.find(THINK_START) < text.find(THINK_END)
    )


def answer_body(text: str) -> str | None:
    """A: the text between the one <answer> and the one </answer>, or None when A fails (module docstring)."""
    if text.count(ANSWER_START) != 1 or text.count(ANSWER_END) != 1:
        return None
    start, end = text.find(ANSWER_START), text.find(ANSWER_END)
    if end < start or text[end + len(ANSWER_END) :].strip():
        return None
    before = text[:start]
    if THINK_START in text[start:] or THINK_END in text[start:]:
        return None  # a think tag inside or after the answer: the answer sits in (or before) a think block
    opened = before.rfind(THINK_START)
    if opened >= 0 and before.find(THINK_END, opened) < 0:
        return None  # after a <think> that never closes: inside the think block
    return text[start + len(ANSWER_START) : end]


def _reject_constant(name):
    raise ValueError(f"{name} is not a number")


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > _MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return float(text)


_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_bounded_int, parse_float=_bounded_float
)


def _unfenced(body: str) -> str | None:
    """The span without whitespace and one optional ``` / ```json fence around it (None: a broken fence)."""
    body = body.strip()
    if not body.startswith("```"):
        return body
    if len(body) < 6 or not body.endswith("```"):
        return None
    inner = body[3:-3]
    if inner[:4].lower() == "json":
        inner = inner[4:]
    inner = inner.strip()
    return None if "```" in inner else inner


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _box(values) -> tuple[float, float, float, float] | None:
    if not isinstance(values, list) or len(values) != 4:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return None
    box = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in box) or not (box[0] < box[2] and box[1] < box[3]):
        return None
    return box  # type: ignore[return-value]


def parse_predictions(body: str, num_images: int) -> tuple[Prediction, ...] | None:
    """J: the answer span as 1..MAX_OBJECTS well-formed objects, or None; never raises on model text."""
    if len(body) > MAX_ANSWER_CHARS:
        return None
    inner = _unfenced(body)
    if not inner or inner[0] != "[":
        return None
    try:
        value = _DECODER.decode(inner)
    except (ValueError, RecursionError):  # JSONDecodeError, a bounded number, NaN/Infinity, deep nesting
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_OBJECTS:
        return None
    out = []
    for obj in value:
        if not isinstance(obj, dict):
            return None
        image_id, box = obj.get("image_id"), _box(obj.get("bbox_2d"))
        if not _is_int(image_id) or not 1 <= image_id <= num_images or box is None:
            return None
        out.append(Prediction(image_id, box))
    return tuple(out)


# ---------------------------------------------------------------- ground truth


def _is_count(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1  # numpy ints too


def targets_of(targets=None, image_index=None, box=None) -> list[dict]:
    """The record's targets: its `targets` list when given, else the single `image_index` + `box`."""
    if targets is not None:
        return targets
    if image_index is None or box is None:
        raise ValueError("a record needs `targets` (a list of {image_index, box}) or `image_index` and `box`")
    return [{"image_index": image_index, "box": box}]


def check_targets(targets, num_images) -> tuple[Target, ...]:
    """Trusted ground truth as Targets; raises ValueError naming the bad value."""
    if not _is_count(num_images):
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    if not isinstance(targets, (list, tuple)) or not targets:
        raise ValueError(f"targets must be a non-empty list of {{image_index, box}}, got {targets!r:.200}")
    out = []
    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            raise ValueError(f"targets[{i}] must be an object with image_index and box, got {t!r:.200}")
        index, box = t.get("image_index"), t.get("box")
        try:
            rewards.check_target(index, box, num_images)
        except ValueError as err:
            raise ValueError(f"targets[{i}]: {err}") from None
        out.append(Target(int(index), tuple(float(v) for v in box)))
    return tuple(out)


def _grid_converters(fam: families.Family, targets, num_images, resized_sizes) -> dict[int, Callable]:
    """For each target image id: prediction box (family numbers) -> box on the 0-1000 grid."""
    out = {}
    for t in targets:
        size = rewards.target_size(fam, t.image_index, num_images, resized_sizes)
        if size is None:
            out[t.image_index] = lambda b: b
        else:
            w, h = size
            scale = (grounding.GRID / w, grounding.GRID / h) * 2
            out[t.image_index] = lambda b, s=scale: tuple(v * k for v, k in zip(b, s, strict=True))
    return out


# ---------------------------------------------------------------- scoring


def _iou(a, b) -> float:
    u = grounding.box_iou(a, b)
    return min(1.0, max(0.0, u)) if math.isfinite(u) else 0.0  # huge finite numbers can overflow to inf/nan


def match(predictions: Sequence[Prediction], targets: Sequence[Target], to_grid: dict[int, Callable]):
    """The Hungarian one-to-one match: (id-agreeing pairs as (target, prediction, g), image, iou)."""
    n, m = len(targets), len(predictions)
    if not m:
        return (), 0.0, 0.0
    gains = np.zeros((n, m))
    g_of = np.zeros((n, m))
    for i, t in enumerate(targets):
        for j, p in enumerate(predictions):
            if p.image_id == t.image_index:
                g_of[i, j] = g(_iou(to_grid[t.image_index](p.box), t.box))
                gains[i, j] = 1.0 + g_of[i, j]
    rows, cols = linear_sum_assignment(gains, maximize=True)
    pairs = tuple(
        (int(i), int(j), float(g_of[i, j])) for i, j in zip(rows, cols, strict=True) if gains[i, j] > 0
    )
    guard = min(1.0, n / m)
    return pairs, len(pairs) / n * guard, sum(p[2] for p in pairs) / n * guard


def evaluate(completion, targets, num_images, family=families.DEFAULT_FAMILY, resized_sizes=None) -> Match:
    """One completion against all targets (module docstring); raises only on bad ground truth."""
    fam = families.get_family(family)
    checked = check_targets(targets, num_images)
    to_grid = _grid_converters(fam, checked, num_images, resized_sizes)
    text = rewards.completion_text(completion)
    if text is None or len(text) > MAX_COMPLETION_CHARS:
        return Match(0.0, 0.0, 0.0, 0, ())
    t_ok = think_ok(text)
    body = answer_body(text)
    preds = parse_predictions(body, num_images) if body is not None else None
    fmt = 0.25 * t_ok + 0.25 * (body is not None) + 0.5 * (preds is not None)
    if preds is None:
        return Match(fmt, 0.0, 0.0, 0, ())
    pairs, image, iou = match(preds, checked, to_grid)
    return Match(fmt, image, iou, len(preds), pairs)


def score(
    completion,
    *,
    num_images,
    targets=None,
    image_index=None,
    box=None,
    weights=None,
    family: str = families.DEFAULT_FAMILY,
    resized_sizes=None,
) -> dict:
    """{"format", "image", "iou" (unweighted), "total": weighted sum}, like rl.rewards.score.

    targets: [{"image_index": k, "box": [x1, y1, x2, y2]}, ...]; or one target as image_index + box."""
    prof = rewards.get_profile(PROFILE)
    w = rewards.resolve_weights(prof, weights)
    result = evaluate(completion, targets_of(targets, image_index, box), num_images, family, resized_sizes)
    values = {name: float(fn(result)) for name, fn in prof.components}
    values["total"] = sum(wi * values[name] for wi, name in zip(w, prof.names, strict=True))
    return values


def reward_functions(
    weights=None, family: str = families.DEFAULT_FAMILY, opened_think: bool = False
) -> list[Callable[..., list[float]]]:
    """TRL reward functions, one per component (format, image, iou), named after it.

    Each is f(completions, num_images, targets=None, image_index=None, box=None, resized_sizes=None,
    **kwargs) -> [weight * value]; a row whose `targets` is None (a single-target record in a mixed set)
    is scored against its image_index + box."""
    prof = rewards.get_profile(PROFILE)
    fam = families.get_family(family)
    w = rewards.resolve_weights(prof, weights)

    def make(name: str, weight: float):
        def reward(
            completions, num_images, targets=None, image_index=None, box=None, resized_sizes=None, **kwargs
        ) -> list[float]:
            n = len(completions)
            columns = {"num_images": num_images}
            for column, values in (
                ("targets", targets),
                ("image_index", image_index),
                ("box", box),
                ("resized_sizes", resized_sizes),
            ):
                columns[column] = [None] * n if values is None else values
            for column, values in columns.items():
                if len(values) != n:
                    raise ValueError(f"reward {name}: {n} completions but {len(values)} values of {column}")
            return [
                weight
                * score(
                    rewards.reopened(c, opened_think),
                    num_images=k,
                    targets=t,
                    image_index=i,
                    box=b,
                    family=fam.name,
                    resized_sizes=z,
                )[name]
                for c, k, t, i, b, z in zip(
                    completions,
                    columns["num_images"],
                    columns["targets"],
                    columns["image_index"],
                    columns["box"],
                    columns["resized_sizes"],
                    strict=True,
                )
            ]

        reward.__name__ = reward.__qualname__ = name
        return reward

    return [make(name, weight) for name, weight in zip(prof.names, w, strict=True)]
