"""RL rewards for multi-image grounding: the `mirg` (MIRG-RL) and `univg` (UniVG-R1) profiles.

Why pure functions with no torch import: the same rules score saved completions from the command line,
feed TRL's GRPOTrainer and are tested by hand, and must import with the stdlib and grounding.py alone.
Completions are untrusted model text: anything that is not a string (or a TRL conversational list of
messages) scores 0, text longer than MAX_COMPLETION_CHARS scores 0 without being read, and every
pattern used is linear (grounding.py bounds its numbers). Ground truth is trusted data: a bad
image_index, box, num_images or resized_sizes raises ValueError naming the value.

Families (families/): a Qwen2-VL answer holds box tokens; a Qwen2.5-VL / Qwen3-VL answer holds JSON
`bbox_2d` (bare or ```json fenced) inside <answer>. The ground-truth `box` stays on the 0-1000 grid for
every family; Qwen3-VL's numbers are on that grid already, Qwen2.5-VL's are pixels of the target image
as training fed it, so its RL records carry `resized_sizes` ([width, height] per image, in order) and the
prediction is read with resized_sizes[image_index - 1]. The image-index rule is the same for all.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import families
from core import grounding

# A 256-token completion is ~1-2k characters; anything 50x longer is not an answer worth reading.
MAX_COMPLETION_CHARS = 100_000


# ---------------------------------------------------------------- components


box_iou = grounding.box_iou  # the pack's one IoU (areas (x2-x1)*(y2-y1); empty or inverted: 0)


def predicted_image(answer: str, num_images: int) -> int | None:
    """The N of the answer's first [N-M], else of its first Image N / Picture N; 1 when alone."""
    index = grounding.first_image_index(answer)
    if index is None and num_images == 1:
        return 1
    return index


@dataclass(frozen=True)
class Read:
    """One completion as the components see it: its text, answer span, the family's box read onto the
    0-1000 grid (floats; None when the answer holds none) and the ground truth."""

    text: str
    answer: str
    family: families.Family
    pred: tuple | None
    image_index: object
    box: object
    num_images: object


def predicted_box(answer: str, family, resized_size=None) -> tuple | None:
    """The answer's first box on the 0-1000 grid, read in the family's form; None when it holds none.

    The family parses (Family.parse_answer: bounded, never raises) and maps its numbers onto the grid
    (Family.box_to_grid: Qwen2.5-VL's pixels through the target image's canvas)."""
    fam = families.get_family(family)
    parsed = fam.parse_answer(answer)
    if parsed is None:
        return None
    # parse_answer gives four finite numbers, so only a missing canvas size raises (score checks it first).
    return fam.box_to_grid(parsed.box, resized_size)


def _on_grid(box) -> bool:
    return box is not None and grounding.on_grid(box)


def _mirg_format(r: Read) -> float:
    """MIRG-RL's format rule (grounding.mirg_well_formed, eval's well_formed too) on the family's parsed box:
    one non-blank think then one non-blank answer and nothing else, the answer's box on the grid (a
    Qwen2.5-VL box off its image fails), an image index in the answer when there are several images."""
    return 1.0 if grounding.mirg_well_formed(r.text, r.num_images, lambda _answer: r.pred) else 0.0


def _image(r: Read) -> float:
    return 1.0 if predicted_image(r.answer, r.num_images) == r.image_index else 0.0


def _iou(r: Read) -> float:
    return box_iou(r.pred, r.box)


def _univg_format(r: Read) -> float:
    """Think then answer (the whole completion), the answer exactly one box in the family's form
    (Family.is_one_box_answer: one integer pair, tokens optional, or JSON holding exactly one bbox_2d and
    nothing else, fence optional), and that box on the image (on the 0-1000 grid with x1 < x2, y1 < y2, for
    every family: a format reward for an impossible box would teach it).

    UniVG-R1's own check (`<think>.*?</think>\\s*<answer>PAIR</answer>$`) allows an empty think, so this
    does too; unlike it, nothing may come before <think>.
    """
    parts = grounding.think_then_answer(r.text)
    if parts is None or not r.family.is_one_box_answer(parts[1]):
        return 0.0
    return 1.0 if _on_grid(r.pred) else 0.0


Component = Callable[[Read], float]


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
    # Scored by rl/mgthinker.py (several targets, one-to-one): its components read mgthinker.Match fields.
    "mgthinker": Profile(
        "mgthinker",
        (("format", lambda m: m.format), ("image", lambda m: m.image), ("iou", lambda m: m.iou)),
        (1.0, 1.0, 1.0),
        uses_image=True,
        difficulty_weighting=False,
        about="MG-Thinker: tag/JSON format + image ids + g(IoU), targets matched one-to-one (rl/mgthinker.py)",
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
    _check_image(image_index, num_images)


def _check_image(image_index, num_images) -> None:
    if not _is_int(num_images) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    if not _is_int(image_index) or not 1 <= image_index <= num_images:
        raise ValueError(
            f"image_index must be an integer from 1 to num_images ({num_images}), got {image_index!r}"
        )


def target_size(family, image_index, num_images, resized_sizes) -> tuple[int, int] | None:
    """The resized (width, height) of the target image a Qwen2.5-VL answer is in pixels of (None for the
    grid families, which need none); raises ValueError naming what is missing or malformed."""
    fam = families.get_family(family)
    if not fam.boxes_need_canvas:
        return None
    _check_image(image_index, num_images)
    if not isinstance(resized_sizes, (list, tuple)) or len(resized_sizes) != num_images:
        raise ValueError(
            f"{fam.display} boxes are pixels of the resized image: resized_sizes must give [width, height] "
            f"for each of the {num_images} image(s), got {resized_sizes!r:.200}"
        )
    size = resized_sizes[image_index - 1]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) and v > 0 for v in size):
        raise ValueError(f"resized_sizes[{image_index - 1}] must be [width, height] in pixels, got {size!r}")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------- scoring


def score(
    completion,
    *,
    image_index,
    box,
    num_images,
    profile: str = "mirg",
    weights=None,
    family: str = families.DEFAULT_FAMILY,
    resized_sizes=None,
) -> dict:
    """{component: value (unweighted), ..., "total": weighted sum}; garbage completions score 0.

    family: whose answer form to read (families.FAMILY_CHOICES); resized_sizes: Qwen2.5-VL's per-image
    [width, height] as training fed them (see the module docstring), unused by the other families."""
    prof = get_profile(profile)
    fam = families.get_family(family)
    w = resolve_weights(prof, weights)
    check_target(image_index, box, num_images, prof.uses_image)
    size = target_size(fam, image_index, num_images, resized_sizes)
    text = completion_text(completion)
    answer = grounding.answer_span(text) if text is not None and len(text) <= MAX_COMPLETION_CHARS else None
    if answer is None:  # no answer span: every component is 0 (both profiles need one)
        values = dict.fromkeys(prof.names, 0.0)
    else:
        read = Read(text, answer, fam, predicted_box(answer, fam, size), image_index, box, num_images)
        values = {name: fn(read) for name, fn in prof.components}
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


def reopened(completion, opened_think: bool):
    """The completion as the rules read it: a Thinking chat template's generation prompt already opens
    `<think>` (Qwen3-VL-*-Thinking), so the model's text starts inside the block; the tag is put back."""
    if not opened_think:
        return completion
    text = completion_text(completion)
    return text if text is None or text.lstrip().startswith("<think>") else "<think>" + text


class _LastBatch:
    """The score() dicts of the last batch the reward functions saw, keyed by its content.

    Why: score() reads a completion once for all components, and TRL calls one function per component on
    the same batch in turn; each function takes its component from the shared dicts (one score() per
    completion per step). Values are tagged with their type so that a batch equal only as numbers (an
    image_index of 2.0 for 2) is scored, and refused, afresh; an unhashable value is never cached.
    """

    def __init__(self):
        self._key = None
        self._scores: list[dict] = []

    def scores(self, rows: list[tuple], compute: Callable[[], list[dict]]) -> list[dict]:
        key = _tagged(rows)
        try:
            hash(key)
        except TypeError:
            key = None
        if key is None or key != self._key:
            self._key, self._scores = None, []  # a batch that fails to score leaves nothing behind
            scores = compute()
            self._key, self._scores = key, scores
        return self._scores


def _tagged(value):
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_tagged(v) for v in value))
    return (type(value), value)


def reward_functions(
    profile: str = "mirg", weights=None, family: str = families.DEFAULT_FAMILY, opened_think: bool = False
) -> list[Callable[..., list[float]]]:
    """TRL reward functions, one per component, named after it (TRL logs `rewards/<name>/mean`).

    Each is f(completions, image_index, box, num_images, resized_sizes=None, **kwargs) -> [weight *
    component value]; the columns come from the RL dataset, one entry per completion (TRL repeats them
    per generation). `resized_sizes` is read for Qwen2.5-VL only (a missing column is refused there).
    `opened_think`: the chat template's generation prompt opens `<think>` (see `reopened`).
    """
    prof = get_profile(profile)
    fam = families.get_family(family)
    w = resolve_weights(prof, weights)
    last = _LastBatch()  # shared by this profile's functions: TRL calls them one after another on one batch

    def make(name: str, weight: float):
        def reward(completions, image_index, box, num_images, resized_sizes=None, **kwargs) -> list[float]:
            n = len(completions)
            sizes = [None] * n if resized_sizes is None else resized_sizes
            columns = (("image_index", image_index), ("box", box), ("num_images", num_images))
            for column, values in (*columns, ("resized_sizes", sizes)):
                if len(values) != n:
                    raise ValueError(f"reward {name}: {n} completions but {len(values)} values of {column}")
            texts = [completion_text(reopened(c, opened_think)) for c in completions]
            rows = list(zip(texts, image_index, box, num_images, sizes, strict=True))
            scores = last.scores(
                rows,
                lambda: [
                    score(
                        t,
                        image_index=i,
                        box=b,
                        num_images=k,
                        profile=prof.name,
                        family=fam.name,
                        resized_sizes=z,
                    )
                    for t, i, b, k, z in rows
                ],
            )
            return [weight * s[name] for s in scores]

        reward.__name__ = reward.__qualname__ = name
        return reward

    return [make(name, weight) for name, weight in zip(prof.names, w, strict=True)]
