"""The group gate's rules (MG-Thinker): alpha's schedule and which groups fill a step, in which order.

Why apart from rl/gated.py: these are plain rules on numbers, tested by hand without torch or TRL; the
trainer applies them to the rewards TRL computed.
"""

from __future__ import annotations

from dataclasses import dataclass


def gate_alpha(step: int, max_steps: int, alpha0: float, phases: int) -> float:
    """alpha0 halved at each of `phases` equal phases of max_steps (step 0-based, the optimizer step)."""
    if max_steps <= 0:
        return alpha0
    phase = min(phases - 1, (step * phases) // max_steps)
    return alpha0 / 2**phase


@dataclass(frozen=True)
class Selection:
    order: list[int]  # the groups the step trains on, in training order
    kept: list[int]  # groups with std > alpha (pool order)
    topped_up: list[int]  # dropped groups used to fill the step


def select_groups(means: list[float], stds: list[float], needed: int, alpha: float) -> Selection:
    """Keep std > alpha and take the `needed` kept groups of highest mean; if too few survive, the dropped
    ones with the highest std fill the step. The step's groups are ordered by mean reward, high to low
    (ties: pool order), top-ups included: the curriculum orders everything the step trains on."""
    if needed > len(means):
        raise ValueError(f"{needed} groups needed from a pool of {len(means)}")
    kept = [g for g, s in enumerate(stds) if s > alpha]
    by_mean = sorted(kept, key=lambda g: -means[g])[:needed]
    dropped = sorted((g for g, s in enumerate(stds) if not s > alpha), key=lambda g: -stds[g])
    top_up = dropped[: needed - len(by_mean)]
    return Selection(sorted(by_mean + top_up, key=lambda g: -means[g]), kept, sorted(top_up))
