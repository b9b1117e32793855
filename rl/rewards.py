"""RL rewards for multi-image grounding: the `mirg` (MIRG-RL) and `univg` (UniVG-R1) profiles.

Why pure functions with no torch import: the same rules score saved completions from the command line,
feed TRL's GRPOTrainer and are tested by hand, and must import with the stdlib and grounding.py alone.
Completions are untrusted model text: anything that is not a string (or a TRL conversational list of
messages) scores 0, text longer than MAX_COMPLETION_CHARS scores 0 without being read, and every
pattern used is linear (grounding.py bounds its numbers). Ground truth is trusted data: a bad
image_index, box or num_images raises ValueError naming the value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grounding

# A 256-token completion is ~1-2k characters; anything 50x longer is not an answer worth reading.
MAX_COMPLETION_CHARS = 100_000


# ---------------------------------------------------------------- components


def box_iou(pred, gt) -> float:
    """IoU with areas (x2-x1)*(y2-y1); an empty or inverted box (either one) gives 0."""
    if pred is None or gt is None:
        return 0.0
    px1, py1, px2, py2 = pred
    gx1, gy1, gx2, gy2 = gt
    if px2 <= px1 or py2 <= py1 or gx2 <= gx1 or gy2 <= gy1:
        return 0.0
    iw = min(px2, gx2) - max(px1, gx1)
    ih = min(py2, gy2) - max(py1, gy1)
    inter = iw * ih if iw > 0 and ih > 0 else 0
    union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - inter
    return float(inter / union) if union > 0 else 0.0


def predicted_image(answer: str, num_images: int) -> int | None:
    """The N of the answer's first [N-M], else of its first Image N / Picture N; 1 when alone."""
    index = grounding.first_image_index(answer)
    if index is None and num_images == 1:
        return 1
    return index


def _mirg_format(text: str, answer: str, image_index, box, num_images) -> float:
    return 1.0 if grounding.mirg_well_formed(text, num_images) else 0.0


def _image(text: str, answer: str, image_index, box, num_images) -> float:
    return 1.0 if predicted_image(answer, num_images) == image_index else 0.0


def _iou(text: str, answer: str, image_index, box, num_images) -> float:
    return box_iou(grounding.first_pair(answer), box)


def _univg_format(text: str, answer: str, image_index, box, num_images) -> float:
    """Think then answer (the whole completion), the answer exactly one integer pair, tokens optional.

    UniVG-R1's own check (`<think>.*?</think>\\s*<answer>PAIR</answer>$`) allows an empty think, so this
    does too; unlike it, nothing may come before <think>.
    """
    parts = grounding.think_then_answer(text)
    if parts is None:
        return 0.0
    body = parts[1].strip()
    if body.startswith(grounding.BOX_START) and body.endswith(grounding.BOX_END):
        body = body[len(grounding.BOX_START) : -len(grounding.BOX_END)].strip()
    return 1.0 if grounding.PAIR_RE.fullmatch(body) else 0.0


Component = Callable[[str, str, object, object, object], float]


@dataclass(frozen=True)
class Profile:
    """A reward profile: ordered components with their default weights."""

    name: str
    components: tuple[tuple[str, Component], ...]
    weights: tuple[float, ...]
    uses_image: bool  # reads image_index / num_images (validated only then)
    difficulty_weighting: bool  # UniVG-R1's exp(1 - mean group IoU) loss weight, on by default
    about: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.components)


PROFILES: dict[str, Profile] = {
    "mirg": Profile(
        "mirg",
        (("format", _mirg_format), ("image", _image), ("iou", _iou)),
        (1.0, 1.0, 1.0),
        uses_image=True,
        difficulty_weighting=False,
        about="MIRG-RL: format + image index + IoU of the answer's first box",
    ),
    "univg": Profile(
        "univg",
        (("format", _univg_format), ("iou", _iou)),
        (1.0, 1.0),
        uses_image=False,
        difficulty_weighting=True,
        about="UniVG-R1: think/answer format with exactly one box + IoU, difficulty-weighted",
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown reward profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]


def resolve_weights(profile: str | Profile, weights=None) -> tuple[float, ...]:
    """The profile's weights, or `weights` given as "1,1,1", a sequence in component order, or a mapping."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    if weights is None:
        return prof.weights
    if isinstance(weights, str):
        parts = [p.strip() for p in weights.split(",")]
        try:
            weights = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"weights {weights!r} must be numbers separated by commas") from None
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(prof.names))
        if unknown:
            raise ValueError(f"profile {prof.name} has no component(s) {unknown}; it has {list(prof.names)}")
        weights = [weights.get(name, default) for name, default in zip(prof.names, prof.weights, strict=True)]
    values = list(weights)
    if len(values) != len(prof.names):
        raise ValueError(
            f"profile {prof.name} needs {len(prof.names)} weights ({', '.join(prof.names)}), got {len(values)}"
        )
    out = []
    for name, v in zip(prof.names, values, strict=True):
        if not _is_real(v):
            raise ValueError(f"weight of {name} must be a finite number, got {v!r}")
        out.append(float(v))
    return tuple(out)


# ---------------------------------------------------------------- inputs


def completion_text(completion) -> str | None:
    """A completion's text: a string, or TRL's conversational form (assistant messages whose content is a
    string or a list of {"type": "text", "text": ...} parts); None for anything else."""
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, list):
        return None
    pieces: list[str] = []
    for message in completion:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            for part in content:
                if (
                    isinstance(part, dict)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    pieces.append(part["text"])
    return "".join(pieces) if pieces else None


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)  # numbers.*: numpy scalars too


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def check_target(image_index, box, num_images, uses_image: bool = True) -> None:
    """Raise ValueError unless box is [x1, y1, x2, y2] on the 0-1000 grid (x1 < x2, y1 < y2) and, when
    the profile reads them, 1 <= image_index <= num_images."""
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_real(v) for v in box):
        raise ValueError(f"box must be 4 numbers [x1, y1, x2, y2], got {box!r}")
    if not grounding.on_grid(box):
        raise ValueError(f"box {list(box)} is not on the 0-1000 grid with x1 < x2 and y1 < y2")
    if not uses_image:
        return
    if not _is_int(num_images) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    if not _is_int(image_index) or not 1 <= image_index <= num_images:
        raise ValueError(
            f"image_index must be an integer from 1 to num_images ({num_images}), got {image_index!r}"
        )


# ---------------------------------------------------------------- scoring


def score(completion, *, image_index, box, num_images, profile: str = "mirg", weights=None) -> dict:
    """{component: value (unweighted), ..., "total": weighted sum}; garbage completions score 0."""
    prof = get_profile(profile)
    w = resolve_weights(prof, weights)
    check_target(image_index, box, num_images, prof.uses_image)
    text = completion_text(completion)
    answer = grounding.answer_span(text) if text is not None and len(text) <= MAX_COMPLETION_CHARS else None
    if answer is None:  # no answer span: every component is 0 (both profiles need one)
        values = dict.fromkeys(prof.names, 0.0)
    else:
        values = {name: fn(text, answer, image_index, box, num_images) for name, fn in prof.components}
    values["total"] = sum(wi * values[name] for wi, name in zip(w, prof.names, strict=True))
    return values


def difficulty_weights(ious: Sequence[float], group_size: int) -> list[float]:
    """UniVG-R1's difficulty weight, one per completion: exp(1 - mean IoU of its group).

    `ious` are the raw (unweighted) IoU rewards in TRL's order: consecutive runs of `group_size`
    completions of the same prompt. Hard prompts (low mean IoU) weigh up to e, solved ones 1.
    """
    if not _is_int(group_size) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    values = list(ious)
    if len(values) % group_size:
        raise ValueError(f"{len(values)} IoUs do not split into groups of {group_size}")
    for i, v in enumerate(values):
        if not _is_real(v) or not 0.0 <= v <= 1.0:
            raise ValueError(f"IoU {i} must be a number from 0 to 1, got {v!r}")
    out: list[float] = []
    for start in range(0, len(values), group_size):
        group = values[start : start + group_size]
        out += [math.exp(1.0 - sum(group) / group_size)] * group_size
    return out


def reward_functions(profile: str = "mirg", weights=None) -> list[Callable[..., list[float]]]:
    """TRL reward functions, one per component, named after it (TRL logs `rewards/<name>/mean`).

    Each is f(completions, image_index, box, num_images, **kwargs) -> [weight * component value]; the
    three columns come from the RL dataset, one entry per completion (TRL repeats them per generation).
    """
    prof = get_profile(profile)
    w = resolve_weights(prof, weights)

    def make(name: str, weight: float):
        def reward(completions, image_index, box, num_images, **kwargs) -> list[float]:
            n = len(completions)
            for column, values in (("image_index", image_index), ("box", box), ("num_images", num_images)):
                if len(values) != n:
                    raise ValueError(f"reward {name}: {n} completions but {len(values)} values of {column}")
            return [
                weight * score(c, image_index=i, box=b, num_images=k, profile=prof.name)[name]
                for c, i, b, k in zip(completions, image_index, box, num_images, strict=True)
            ]

        reward.__name__ = reward.__qualname__ = name
        return reward

    return [make(name, weight) for name, weight in zip(prof.names, w, strict=True)]
