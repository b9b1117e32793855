"""demo.run.seed_summary: the RL gain over seeds holds only when it is >= 2 points, more than twice the
seed spread, and no task's well-formed rate falls below trajectory SFT's."""

from __future__ import annotations

from demo.run import seed_summary


def _metrics(ave, formed):
    return {
        "average": {"acc@0.5": ave},
        "tasks": {"gg": {"well_formed": formed}, "ot": {"well_formed": 100.0}},
    }


def test_a_gain_beyond_the_spread_holds():
    m = {
        "traj_sft": _metrics(80.0, 100.0),
        "grpo_seed0": _metrics(83.0, 100.0),
        "grpo_seed1": _metrics(82.5, 100.0),
    }
    got = seed_summary(m, [0, 1])
    assert got["seeds"] == {"0": 83.0, "1": 82.5} and got["mean"] == 82.75 and got["spread"] == 0.5
    assert abs(got["gain"] - 2.75) < 1e-9 and got["holds"]


def test_noise_or_a_broken_format_does_not_hold():
    noisy = {
        "traj_sft": _metrics(80.0, 100.0),
        "grpo_seed0": _metrics(84.0, 100.0),
        "grpo_seed1": _metrics(81.0, 100.0),
    }
    assert not seed_summary(noisy, [0, 1])["holds"]  # gain 2.5, spread 3
    broken = {
        "traj_sft": _metrics(80.0, 100.0),
        "grpo_seed0": _metrics(83.0, 90.0),
        "grpo_seed1": _metrics(83.0, 100.0),
    }
    got = seed_summary(broken, [0, 1])
    assert got["well_formed"]["gg"] == {"traj_sft": 100.0, "grpo_min": 90.0} and not got["holds"]
