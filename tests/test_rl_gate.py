"""The group gate's rules (rl/gate.py) by hand: alpha's schedule, the gate, the fill and its order.

Pure Python; the same rules on a real TRL run are tests/test_rl_gated.py.
"""

from __future__ import annotations

import pytest

from rl.gate import gate_alpha, select_groups


@pytest.mark.parametrize(
    "step, max_steps, expected",
    [
        (0, 400, 0.05),
        (99, 400, 0.05),
        (100, 400, 0.025),  # phase 2 of 4 starts at a quarter of max_steps
        (199, 400, 0.025),
        (200, 400, 0.0125),
        (300, 400, 0.00625),
        (399, 400, 0.00625),
        (400, 400, 0.00625),  # never a fifth halving
        (0, 4, 0.05),
        (3, 4, 0.00625),
        (2, 10, 0.05),  # 10 steps: phases start at 2.5, 5, 7.5 -> steps 3, 5, 8
        (3, 10, 0.025),
        (5, 10, 0.0125),
        (8, 10, 0.00625),
    ],
)
def test_alpha_halves_at_each_of_four_equal_phases(step, max_steps, expected):
    assert gate_alpha(step, max_steps, 0.05, 4) == pytest.approx(expected)


def test_alpha_with_one_phase_or_unknown_length():
    assert gate_alpha(7, 10, 0.05, 1) == 0.05
    assert gate_alpha(7, -1, 0.05, 4) == 0.05


def test_the_gate_keeps_std_strictly_above_alpha_and_fills_by_mean():
    means = [0.9, 0.2, 0.5, 1.0, 0.7, 0.1]
    stds = [0.3, 0.05, 0.2, 0.0, 0.1, 0.4]
    s = select_groups(means, stds, needed=2, alpha=0.05)
    assert s.kept == [0, 2, 4, 5]  # group 1's std equals alpha: dropped; group 3 (all equal) dropped
    assert s.order == [0, 4] and s.topped_up == []  # the two kept groups of highest mean, high first
    s = select_groups(means, stds, needed=4, alpha=0.05)
    assert s.order == [0, 4, 2, 5]


def test_too_few_kept_are_topped_up_with_the_highest_std_dropped():
    means = [0.9, 0.2, 0.5, 1.0, 0.7, 0.1]
    stds = [0.3, 0.05, 0.2, 0.0, 0.1, 0.4]
    s = select_groups(means, stds, needed=2, alpha=0.25)  # only groups 0 (0.3) and 5 (0.4) pass
    assert s.kept == [0, 5] and s.topped_up == [] and s.order == [0, 5]
    s = select_groups(means, stds, needed=3, alpha=0.25)  # one short: group 2 has the highest dropped std
    assert s.topped_up == [2] and s.order == [0, 2, 5]  # the whole step ordered by mean
    s = select_groups(means, stds, needed=3, alpha=1.0)  # none kept: the three highest stds (5, 0, 2)
    assert s.kept == [] and s.topped_up == [0, 2, 5] and s.order == [0, 2, 5]


def test_ties_keep_pool_order_and_a_short_pool_is_refused():
    s = select_groups([0.5, 0.5, 0.5], [0.1, 0.1, 0.1], needed=2, alpha=0.05)
    assert s.order == [0, 1]
    with pytest.raises(ValueError, match="pool of 3"):
        select_groups([0.5] * 3, [0.1] * 3, needed=4, alpha=0.05)
