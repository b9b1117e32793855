"""demo.run.seed_summary: the RL gain over seeds holds only when it is >= 2 points, more than twice the
seed spread, and no task's well-formed rate falls below trajectory SFT's."""

from __future__ import annotations

import pytest

from demo.run import PROFILES, Demo, main, parse_rl_seeds, parse_rl_set, seed_summary, setting_tag


def _metrics(ave, formed, gg_acc=100.0):
    return {
        "average": {"acc@0.5": ave},
        "tasks": {
            "gg": {"well_formed": formed, "acc@0.5": gg_acc},
            "ot": {"well_formed": 100.0, "acc@0.5": 30.0},
        },
    }


def test_a_gain_beyond_the_spread_holds():
    m = {
        "traj_sft": _metrics(80.0, 100.0),
        "grpo_seed0": _metrics(83.0, 100.0),
        "grpo_seed1": _metrics(82.5, 100.0),
    }
    got = seed_summary(m, {0: "grpo_seed0", 1: "grpo_seed1"})
    assert got["seeds"] == {"0": 83.0, "1": 82.5} and got["mean"] == 82.75 and got["spread"] == 0.5
    assert abs(got["gain"] - 2.75) < 1e-9 and got["holds"]


def test_noise_or_a_broken_format_does_not_hold():
    noisy = {
        "traj_sft": _metrics(80.0, 100.0),
        "grpo_seed0": _metrics(84.0, 100.0),
        "grpo_seed1": _metrics(81.0, 100.0),
    }
    assert not seed_summary(noisy, {0: "grpo_seed0", 1: "grpo_seed1"})["holds"]  # gain 2.5, spread 3
    broken = {
        "traj_sft": _metrics(80.0, 100.0),
        "grpo_seed0": _metrics(83.0, 90.0),
        "grpo_seed1": _metrics(83.0, 100.0),
    }
    got = seed_summary(broken, {0: "grpo_seed0", 1: "grpo_seed1"})
    assert got["well_formed"]["gg"] == {"traj_sft": 100.0, "grpo_min": 90.0} and not got["holds"]


def test_each_tasks_score_per_seed_shows_a_solved_task_lost_with_every_answer_well_formed():
    m = {
        "traj_sft": _metrics(80.0, 100.0),
        "grpo_seed0": _metrics(78.0, 100.0, gg_acc=88.7),
        "grpo_seed1": _metrics(80.5, 100.0),
    }
    got = seed_summary(m, {0: "grpo_seed0", 1: "grpo_seed1"})
    assert got["tasks"]["gg"] == {"traj_sft": 100.0, "seeds": {"0": 88.7, "1": 100.0}}
    assert got["tasks"]["ot"]["seeds"] == {"0": 30.0, "1": 30.0}
    assert got["well_formed"]["gg"]["grpo_min"] == 100.0 and not got["holds"]


def test_a_setting_has_its_own_runs_and_summary():
    extra = parse_rl_set(["loss_type=dapo", "epsilon_high=0.28"])
    assert extra == {"loss_type": "dapo", "epsilon_high": "0.28"}
    tag = setting_tag(extra)
    assert tag == "_epsilon_high-0.28_loss_type-dapo" and setting_tag({}) == ""
    assert setting_tag({"output_dir": "../x y"}) == "_output_dir-..-x-y"  # never a path separator
    m = {"traj_sft": _metrics(80.0, 100.0), f"grpo_seed3{tag}": _metrics(81.0, 100.0)}
    got = seed_summary(m, {3: f"grpo_seed3{tag}"})
    assert got["seeds"] == {"3": 81.0} and got["spread"] == 0.0 and not got["holds"]


@pytest.mark.parametrize("bad", ["loss_type", "=dapo", "Loss-Type=x", "output_dir=/tmp/x", "seed=3"])
def test_a_malformed_rl_set_is_refused_in_one_line(bad, capsys):
    assert main(["--rl-seeds", "0", "--rl-set", bad, "--workdir", "/nonexistent/never-made"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and repr(bad) in err[0]


def test_rl_set_without_seeds_is_refused(capsys):
    assert main(["--rl-set", "beta=0", "--workdir", "/nonexistent/never-made"]) == 2
    assert "--rl-seeds" in capsys.readouterr().err


def test_the_demo_s_own_grpo_run_is_its_seed_s_run_of_the_demo_s_setting(tmp_path):
    """`--rl-seeds 0,1,2` scores the demo's `grpo` as seed 0 instead of training it a second time; another
    setting (--rl-set) trains its own seed 0."""
    demo = Demo(tmp_path, PROFILES["smoke"], "python", seed=0)
    assert demo.seed_runs([0, 1, 2], "") == {0: "grpo", 1: "grpo_seed1", 2: "grpo_seed2"}
    tag = setting_tag({"learning_rate": "1e-4"})
    assert demo.seed_runs([0, 1], tag) == {0: f"grpo_seed0{tag}", 1: f"grpo_seed1{tag}"}
    assert Demo(tmp_path, PROFILES["smoke"], "python", seed=3).seed_runs([0], "") == {0: "grpo_seed0"}


def test_rl_seeds_are_read_before_any_step(tmp_path, capsys):
    """`make demo RL_SEEDS=0,x` stops at once with a usage error, not after the demo's 14 minutes."""
    assert parse_rl_seeds("0, 1,2,") == [0, 1, 2] and parse_rl_seeds("") == []
    assert main(["--workdir", str(tmp_path), "--rl-seeds", "0,x"]) == 2
    assert "'x' is not a seed" in capsys.readouterr().err
    assert not (tmp_path / "saves").exists()  # nothing claimed, nothing run
