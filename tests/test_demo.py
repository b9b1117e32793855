"""A reduced `make demo`: every link of the chain, with the real tools, end to end.

Tiny model -> synthetic download -> converters (with the trajectory and RL sets) ->
LLaMA-Factory stage 1 -> stage 2 -> merge_tool -> trajectory SFT -> TRL GRPO -> vLLM
evaluation of six models -> comparison table. A broken link anywhere turns this red.
The learning claims themselves are measured by the full demo.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from demo.run import MODELS, PROFILES
from tests.conftest import REPO, run_in


@pytest.mark.slow
@pytest.mark.vllm
def test_reduced_demo_runs_end_to_end_and_reuses_its_work(tmp_path, eval_python):
    args = ["-m", "demo.run", "--workdir", str(tmp_path), "--profile", "smoke", "--eval-python", eval_python]
    first = run_in(sys.executable, args, timeout=3000)
    outputs = tmp_path / "outputs/demo"
    bench = json.loads((tmp_path / "data/demo/raw/MIG-Bench/MIG_data.json").read_text())
    assert len(bench) == PROFILES["smoke"].bench_records

    for name in MODELS:
        metrics = json.loads((outputs / name / "metrics.json").read_text())
        assert set(metrics) == {"tasks", "groups", "average"}
        assert metrics["average"]["n"] == len(bench)
        assert sum(task["n"] for task in metrics["tasks"].values()) == len(bench)
        lines = (outputs / name / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == len(bench)
    for stage in ("stage1", "stage2", "traj_sft"):
        assert (outputs / f"loss_{stage}.png").stat().st_size > 0
    assert (outputs / "grpo_rewards.png").stat().st_size > 0
    run_json = json.loads((outputs / "grpo" / "run.json").read_text())
    assert run_json["protocol"]["answer_format"] == "think"
    summary = json.loads((outputs / "summary.json").read_text())
    loss = summary["loss_stage1"]
    assert math.isfinite(loss["last"]) and loss["last"] < loss["first"]
    merged = tmp_path / "saves/demo/merged"
    record = json.loads((merged / "merge_tool_config.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in record["models"]] == ["stage1", "stage2"]
    assert "| merged" in first.stdout and "| grpo" in first.stdout  # the comparison table was printed
    rewards = summary["grpo_rewards"]
    assert {"reward", "rewards/format/mean", "rewards/image/mean", "rewards/iou/mean"} <= set(rewards)

    again = run_in(sys.executable, args, timeout=900)
    for step in (
        "tiny model: reusing",
        "stage1: reusing",
        "stage2: reusing",
        "merge: reusing",
        "traj_sft: reusing",
        "grpo: reusing",
    ):
        assert step in again.stdout
    assert again.stdout.count("eval ") >= len(MODELS) and "eval merged: reusing" in again.stdout

    settings = tmp_path / "saves/demo/demo_settings.json"
    before = settings.read_text()
    other = subprocess.run(  # other settings on the same tree: refused before any step runs
        [sys.executable, *args, "--seed", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert other.returncode == 1, other.stdout + other.stderr  # cli.py: bad input, nothing run
    assert "seed 0 -> 1" in other.stderr and "make clean" in other.stderr
    assert "[demo" not in other.stdout and settings.read_text() == before
