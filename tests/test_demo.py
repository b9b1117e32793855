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
from PIL import Image

import families
from demo.run import MODELS, PROFILES, RL_MODELS
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
    assert "CPU pins: ATEN_CPU_CAPABILITY=avx2" in first.stdout  # demo/cpu_pins.py, for every step
    rewards = summary["grpo_rewards"]
    assert {"reward", "rewards/format/mean", "rewards/image/mean", "rewards/iou/mean"} <= set(rewards)
    for name in ("merged", "grpo"):  # `make demo` writes their viewers and says where
        assert f"viewer of {name}: {outputs / name / 'view' / 'index.html'}" in first.stdout
        assert len(list((outputs / name / "view").glob("*-1.html"))) == len(metrics["tasks"])
    assert (outputs / "diff_merged_grpo.md").read_text().startswith("# eval diff (MIG-Bench): A = merged")

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


@pytest.mark.slow
@pytest.mark.vllm
def test_reduced_demo_on_qwen25vl_writes_and_scores_pixel_json_answers(tmp_path, eval_python):
    """`make demo FAMILY=qwen2.5-vl` (smoke profile): the family's JSON pixel answers reach the training
    data and every eval reads them as Qwen2.5-VL's, in the family's own tree. One family only (CI time)."""
    args = ["-m", "demo.run", "--workdir", str(tmp_path), "--profile", "smoke", "--family", "qwen2.5-vl"]
    run_in(sys.executable, [*args, "--eval-python", eval_python], timeout=3000)
    data, outputs = tmp_path / "data/demo-qwen2.5-vl", tmp_path / "outputs/demo-qwen2.5-vl"
    assert not (tmp_path / "saves/demo").exists() and not (tmp_path / "data/demo").exists()
    settings = json.loads((tmp_path / "saves/demo-qwen2.5-vl/demo_settings.json").read_text())
    assert settings["family"] == "qwen2.5-vl"
    base = json.loads((tmp_path / "saves/demo-qwen2.5-vl/base/config.json").read_text())
    assert base["model_type"] == "qwen2_5_vl"

    # The stage-1 mixture answers in JSON bbox_2d, in pixels of its images as training resizes them
    # (84 x 84 stays, COCO's 105 x 84 becomes 112 x 84); 0-1000 grid numbers (cells of 333) would not fit.
    mixture = json.loads((data / "mixtures/demo_stage1.json").read_text())
    n_boxes = 0
    for rec in mixture:
        sizes = [Image.open(path).size for path in rec["images"]]
        resized = [
            families.training_resized_size(w, h, 50176, 3136, "qwen2.5-vl", 3136, 50176) for w, h in sizes
        ]
        for turn in rec["conversations"]:
            assert "<|box_start|>" not in turn["value"]
            if turn["from"] == "gpt" and '"bbox_2d"' in turn["value"]:
                box = families.parse_answer(turn["value"], "qwen2.5-vl").box
                assert box[2] <= max(w for w, _ in resized) and box[3] <= max(h for _, h in resized), (
                    box,
                    sizes,
                )
                n_boxes += 1
    assert n_boxes >= 10

    for name in MODELS:
        run_json = json.loads((outputs / name / "run.json").read_text())
        assert run_json["protocol"]["family"] == "qwen2.5-vl", name
        assert run_json["info"]["coords"] == "resized-pixels", name
        assert "Qwen2.5-VL" in (outputs / name / "results.md").read_text(), name
    assert json.loads((outputs / "merged/run.json").read_text())["protocol"]["answer_format"] == "json"
    assert json.loads((outputs / "grpo/run.json").read_text())["protocol"]["answer_format"] == "think-json"
    summary = json.loads((outputs / "summary.json").read_text())
    assert set(MODELS) <= set(summary) and summary["grpo_rewards"]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("family", ["qwen3.5", "internvl"])
def test_reduced_demo_on_a_new_family_runs_its_chain_in_its_answer_form(family, tmp_path, eval_python):
    """`make demo FAMILY=qwen3.5|internvl` (smoke profile): the family's answers reach the training data, the
    whole chain runs on its tiny model (InternVL's at the demo's 56-pixel tiles, Family.demo_tiny_options),
    and every eval reads the family's answers: InternVL through vLLM, Qwen3.5 through transformers on a CPU
    without AMX (Family.vllm_cpu_limit), each at the demo's named generation budget."""
    fam = families.get_family(family)
    args = ["-m", "demo.run", "--workdir", str(tmp_path), "--profile", "smoke", "--family", family]
    first = run_in(sys.executable, [*args, "--eval-python", eval_python], timeout=3000)
    tree = f"demo-{family}"
    data, outputs, saves = tmp_path / "data" / tree, tmp_path / "outputs" / tree, tmp_path / "saves" / tree
    base = json.loads((saves / "base/config.json").read_text())
    assert base["model_type"] in fam.model_types
    # every stage trains with the template `make stage1` picks for the checkpoint (the tiny Qwen3.5's chat
    # template thinks, as released: qwen3_5, whose prompt eval's Thinking parse then matches)
    template, _ = fam.training_template(saves / "base")
    trainings = [line for line in first.stdout.splitlines() if "llamafactory-cli train" in line]
    assert len(trainings) == 3 and all(f" template={template} " in line for line in trainings), trainings
    if family == "internvl":
        assert base["vision_config"]["image_size"] == [56, 56] and base["image_seq_length"] == 4

    mixture = json.loads((data / "mixtures/demo_stage1.json").read_text())
    answers = [t["value"] for rec in mixture for t in rec["conversations"] if t["from"] == "gpt"]
    boxed = [a for a in answers if fam.parse_answer(a) is not None]
    assert len(boxed) >= 10
    assert all("<|box_start|>" not in a for a in answers)  # never Qwen2-VL's tokens
    marker = "<box>[[" if family == "internvl" else '"bbox_2d"'
    assert all(marker in a for a in boxed), boxed[:3]
    traces = json.loads((data / "sharegpt/mg_traj_sft.json").read_text())  # boxes inside the reasoning too
    answers = [rec["conversations"][-1]["value"] for rec in traces]
    assert answers and all(marker in a and "<|box_start|>" not in a for a in answers), answers[:2]
    if family == "internvl":
        assert not any('"bbox_2d"' in a for a in answers), answers[:2]

    bench = json.loads((data / "raw/MIG-Bench/MIG_data.json").read_text())
    for name in MODELS:
        run_json = json.loads((outputs / name / "run.json").read_text())
        assert run_json["protocol"]["family"] == family, name
        assert run_json["protocol"]["backend"] == ("vllm" if fam.vllm_cpu_limit is None else "hf"), name
        assert run_json["protocol"]["max_new_tokens"] == (160 if name in RL_MODELS else 128), name
        assert len((outputs / name / "predictions.jsonl").read_text().splitlines()) == len(bench), name
    summary = json.loads((outputs / "summary.json").read_text())
    assert set(MODELS) <= set(summary) and summary["grpo_rewards"]


def _demo(workdir, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "demo.run", "--workdir", str(workdir), "--profile", "smoke", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_tree_of_another_family_or_unreadable_settings_is_refused_before_any_step(tmp_path):
    """The family is a claimed setting: a tree's demo_settings.json without one is Qwen2-VL's (older trees)."""
    from demo.run import Demo

    qwen2 = Demo(tmp_path, PROFILES["smoke"], "unused", blind_teacher=True).settings()  # main's default
    assert "family" not in qwen2  # the qwen2-vl tree's settings file is what it always was
    tree = tmp_path / "saves/demo-qwen2.5-vl"
    tree.mkdir(parents=True)
    (tree / "demo_settings.json").write_text(json.dumps(qwen2))  # a Qwen2-VL tree moved into place
    refused = _demo(tmp_path, "--family", "qwen2.5-vl")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "family qwen2-vl -> qwen2.5-vl" in refused.stderr and "make clean" in refused.stderr
    assert "[demo" not in refused.stdout and not (tmp_path / "data").exists()

    (tmp_path / "saves/demo").mkdir()
    (tmp_path / "saves/demo/demo_settings.json").write_text(json.dumps({**qwen2, "seed": 1}))
    legacy = _demo(tmp_path)  # the default family: only the seed differs, not the (absent) family
    assert legacy.returncode == 1 and "(seed 1 -> 0)" in legacy.stderr  # and no family change listed

    (tree / "demo_settings.json").write_bytes(b"\xff{")
    broken = _demo(tmp_path, "--family", "qwen2.5-vl")
    assert broken.returncode == 1 and "cannot read" in broken.stderr and "demo_settings.json" in broken.stderr
    assert _demo(tmp_path, "--family", "qwen9-vl").returncode == 2  # argparse: not a family
