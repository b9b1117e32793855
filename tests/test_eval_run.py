"""`python -m eval run` with the tiny Qwen2-VL: transformers (here) and vLLM (in .venv-eval).

One synthetic bench in MIG_data.json's exact layout (all ten tasks, 2 to 6
images). The transformers run and the single vLLM engine run are shared by
several tests; float32 in both makes greedy decoding comparable token by token.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval.outcomes import OUTCOMES
from eval.synthetic import make_synthetic_bench
from eval.tasks import TASK_NAMES
from tests.conftest import REPO, run_in

pytestmark = pytest.mark.train  # every test runs the tiny model (transformers here, vLLM in .venv-eval)

# The paper script inherits the checkpoint's repetition penalty (1.05 for Qwen2-VL-Instruct); use it here too.
COMMON = ["--dtype", "float32", "--max-new-tokens", "32", "--repetition-penalty", "1.05"]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def eval_cmd(model, bench, out, *extra) -> list[str]:
    return [
        "-m",
        "eval",
        "run",
        "--model",
        str(model),
        "--bench",
        str(bench),
        "--output-dir",
        str(out),
        *COMMON,
        *extra,
    ]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return make_synthetic_bench(tmp_path_factory.mktemp("mig"), per_task=2, seed=3)


@pytest.fixture(scope="module")
def hf_run(tiny_model, bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "out"
    run_in(sys.executable, eval_cmd(tiny_model, bench, out, "--backend", "hf", "--chunk-size", "4"))
    return out


@pytest.fixture(scope="module")
def vllm_proc(tiny_model, bench, eval_python, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("vllm") / "out"
    proc = run_in(eval_python, eval_cmd(tiny_model, bench, out, "--backend", "vllm"), timeout=900)
    return out, proc.stderr + proc.stdout


@pytest.fixture(scope="module")
def vllm_run(vllm_proc) -> Path:
    return vllm_proc[0]


@pytest.mark.vllm
def test_vllm_on_the_cpu_runs_engine_and_worker_in_the_eval_process(vllm_proc):
    """Each extra process would import vLLM again (71 s -> 26 s for a tiny model's 40 prompts here)."""
    log = vllm_proc[1]
    assert "Initializing a V1 LLM engine" in log
    assert "(EngineCore pid=" not in log and "Worker pid=" not in log, log[-2000:]


def check_complete_run(out: Path, bench: Path) -> list[dict]:
    records = lines(out / "predictions.jsonl")
    data = json.loads(bench.read_text())
    assert sorted(r["index"] for r in records) == list(range(len(data)))  # each instance exactly once
    for r in records:
        src = data[r["index"]]
        assert r["task"] == src["task"] and r["images"] == src["images"] and r["answer"] == src["answer"]
        assert r["prompt"].startswith(src["question"]) and r["prompt"].endswith(
            "Don't generate addtional words."
        )
        assert isinstance(r["response"], str) and 0 <= r["iou"] <= 1
        assert r["outcome"] in OUTCOMES and (r["outcome"] == "hit") == (r["iou"] >= 0.5)
        assert len(r["resized_sizes"]) == len(src["images"]) and r["prompt_tokens"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["tasks", "groups", "average"]
    assert list(metrics["tasks"]) == list(TASK_NAMES)
    assert all(m["n"] == 2 == sum(m["outcomes"].values()) for m in metrics["tasks"].values())
    assert metrics["average"]["n"] == len(data)
    for name in ("results.md", "metrics.csv", "radar.png", "outcomes.png", "run.json"):
        assert (out / name).stat().st_size > 0
    return records


def test_hf_run_writes_every_instance_and_the_reports(hf_run, bench):
    records = check_complete_run(hf_run, bench)
    assert {r["n_images"] for r in records} == {2, 3, 4, 5, 6}
    assert all(0 < r["output_tokens"] <= 32 for r in records)
    run = json.loads((hf_run / "run.json").read_text())["protocol"]
    assert run["backend"] == "hf" and run["max_new_tokens"] == 32 and run["mode"] == "direct"
    assert run["repetition_penalty"] == 1.05


def test_repetition_penalty_is_applied(hf_run, bench, tiny_model, tmp_path):
    out = tmp_path / "nopenalty"
    cmd = eval_cmd(tiny_model, bench, out, "--backend", "hf", "--tasks", "diff", "region", "--limit", "1")
    run_in(sys.executable, [*cmd, "--repetition-penalty", "1.0"])
    with_penalty = {r["index"]: r["response"] for r in lines(hf_run / "predictions.jsonl")}
    without = {r["index"]: r["response"] for r in lines(out / "predictions.jsonl")}
    assert any(with_penalty[i] != text for i, text in without.items())


def test_rerun_resumes_without_loading_the_model(hf_run, bench, tiny_model):
    before = (hf_run / "predictions.jsonl").read_text()
    start = time.monotonic()
    proc = run_in(sys.executable, eval_cmd(tiny_model, bench, hf_run, "--backend", "hf"))
    assert "already generated" in proc.stderr and "Loading weights" not in proc.stderr
    assert (hf_run / "predictions.jsonl").read_text() == before
    assert time.monotonic() - start < 60


def test_a_different_protocol_is_refused(hf_run, bench, tiny_model, tmp_path):
    for extra in (
        ["--format-suffix", "released"],
        ["--mode", "cot"],
        ["--max-new-tokens", "16"],
        ["--prompt-layout", "paper"],
    ):
        proc = subprocess.run(
            [sys.executable, *eval_cmd(tiny_model, bench, hf_run, "--backend", "hf"), *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 1 and "different protocol" in proc.stderr, proc.stderr
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    proc = subprocess.run(
        [sys.executable, *eval_cmd(other, bench, hf_run, "--backend", "hf")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "model" in proc.stderr
    # Asked explicitly: the old run is discarded and the new one written.
    copy = tmp_path / "forced"
    shutil.copytree(hf_run, copy)
    run_in(
        sys.executable,
        eval_cmd(
            tiny_model,
            bench,
            copy,
            "--backend",
            "hf",
            "--format-suffix",
            "released",
            "--tasks",
            "diff",
            "--limit",
            "1",
            "--force",
        ),
    )
    records = lines(copy / "predictions.jsonl")
    assert len(records) == 1 and records[0]["prompt"].endswith("<|box_end|>. Don't generate addtional words.")


def test_the_training_prompt_layout_by_default_and_the_papers_on_request(hf_run, bench, tiny_model, tmp_path):
    """Eval's prompt is the training prompt (families.chat: a newline after each image, as the records
    have, one token here); `--prompt-layout paper` is the paper script's, recorded as such."""
    out = tmp_path / "paper"
    cmd = eval_cmd(tiny_model, bench, out, "--backend", "hf", "--tasks", "diff", "region", "--limit", "1")
    run_in(sys.executable, [*cmd, "--prompt-layout", "paper"])
    training = {r["index"]: r for r in lines(hf_run / "predictions.jsonl")}
    paper = lines(out / "predictions.jsonl")
    assert len(paper) == 2
    for r in paper:
        assert training[r["index"]]["prompt_tokens"] == r["prompt_tokens"] + r["n_images"]
    assert json.loads((hf_run / "run.json").read_text())["protocol"]["prompt_layout"] == "training"
    assert "prompt_layout" not in json.loads((out / "run.json").read_text())["protocol"]  # as before it
    assert "- Prompt layout: `training`" in (hf_run / "results.md").read_text()
    assert "- Prompt layout: `paper`" in (out / "results.md").read_text()


def test_killed_run_resumes_without_losing_or_duplicating(tiny_model, bench, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, *eval_cmd(tiny_model, bench, out, "--backend", "hf", "--chunk-size", "1")]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pred = out / "predictions.jsonl"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if pred.exists() and pred.read_text().count("\n") >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    done_before = len({r["index"] for r in lines(pred)})
    total = len(json.loads(bench.read_text()))
    assert 3 <= done_before < total
    rerun = run_in(sys.executable, cmd[1:])
    assert f"{total - done_before} of {total} instance(s) to generate" in rerun.stderr
    records = lines(pred)
    assert sorted(r["index"] for r in records) == list(range(total))  # nothing lost, nothing twice


def test_missing_image_is_skipped_reported_and_retried(tiny_model, bench, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(bench.parent, root / "MIG-Bench")
    data = json.loads((root / "MIG-Bench" / "MIG_data.json").read_text())
    victim = next(i for i, r in enumerate(data) if r["task"] == "diff")
    image = root / data[victim]["images"][1]
    hidden = image.with_suffix(".hidden")
    image.rename(hidden)
    out = tmp_path / "out"
    cmd = eval_cmd(
        tiny_model, root / "MIG-Bench" / "MIG_data.json", out, "--backend", "hf", "--tasks", "diff"
    )
    run_in(sys.executable, cmd)
    records = {r["index"]: r for r in lines(out / "predictions.jsonl")}
    assert "image not found" in records[victim]["skipped"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"]["diff"]["n"] == 2  # counted, as a miss
    assert f"instance {victim} (diff): image not found" in (out / "results.md").read_text()
    hidden.rename(image)
    proc = run_in(sys.executable, cmd)
    assert "1 of 2 instance(s) to generate" in proc.stderr
    final = {}
    for r in lines(out / "predictions.jsonl"):
        final[r["index"]] = r
    assert "skipped" not in final[victim] and final[victim]["prompt_tokens"] > 0


def test_data_parallel_workers_share_the_run(tiny_model, bench, tmp_path):
    out = tmp_path / "dp"
    proc = run_in(
        sys.executable,
        eval_cmd(
            tiny_model,
            bench,
            out,
            "--backend",
            "hf",
            "--data-parallel",
            "2",
            "--tasks",
            "diff",
            "region",
            "group_grounding",
        ),
    )
    assert "6 of 6 instance(s)" in proc.stderr
    records = lines(out / "predictions.jsonl")
    assert sorted(r["task"] for r in records) == sorted(["diff", "region", "group_grounding"] * 2)
    assert len({r["index"] for r in records}) == 6
    assert not list(out.glob("*.rank*.jsonl"))  # shards folded into predictions.jsonl


def test_cot_mode_runs_both_steps(tiny_model, bench, tmp_path):
    out = tmp_path / "cot"
    run_in(
        sys.executable,
        eval_cmd(
            tiny_model,
            bench,
            out,
            "--backend",
            "hf",
            "--mode",
            "cot",
            "--limit",
            "1",
            "--tasks",
            "region,group_grounding,multi_view",
        ),
    )
    step1 = {r["index"]: r for r in lines(out / "cot_step1.jsonl")}
    records = lines(out / "predictions.jsonl")
    assert len(records) == 3 and set(step1) == {r["index"] for r in records}
    for r in records:
        assert r["step1"]["response"] == step1[r["index"]]["response"]
        if r["task"] == "region":
            assert r["cot_image"] == 0 and r["prompt"].startswith(
                "Please ground the object <|object_ref_start|>"
            )
        if r["task"] == "multi_view":
            assert r["cot_image"] == r["target_image"]
        assert r["prompt_tokens"] < 200  # step 2 sees one image only


@pytest.mark.vllm
def test_vllm_run_is_complete(vllm_run, bench):
    records = check_complete_run(vllm_run, bench)
    assert json.loads((vllm_run / "run.json").read_text())["protocol"]["backend"] == "vllm"
    assert {r["n_images"] for r in records} == {2, 3, 4, 5, 6}


@pytest.mark.vllm
def test_vllm_matches_transformers_token_for_token(vllm_run, hf_run):
    hf = {r["index"]: r for r in lines(hf_run / "predictions.jsonl")}
    vl = {r["index"]: r for r in lines(vllm_run / "predictions.jsonl")}
    assert hf.keys() == vl.keys()
    # Same chat template, same qwen_vl_utils images, same image token counts.
    assert all(hf[i]["prompt"] == vl[i]["prompt"] for i in hf)
    assert all(hf[i]["prompt_tokens"] == vl[i]["prompt_tokens"] for i in hf)
    # Greedy float32 decoding of the same model gives the same text, hence the same scores.
    same = [i for i in hf if hf[i]["response"] == vl[i]["response"]]
    assert len(same) == len(hf), [(hf[i]["response"], vl[i]["response"]) for i in hf if i not in same][:2]
    assert json.loads((hf_run / "metrics.json").read_text()) == json.loads(
        (vllm_run / "metrics.json").read_text()
    )


@pytest.mark.vllm
def test_vllm_rerun_is_a_no_op_without_an_engine(vllm_run, bench, tiny_model, eval_python):
    before = (vllm_run / "predictions.jsonl").read_text()
    start = time.monotonic()
    proc = run_in(eval_python, eval_cmd(tiny_model, bench, vllm_run, "--backend", "vllm"))
    assert "already generated" in proc.stderr and "Initializing a V1 LLM engine" not in proc.stderr
    assert (vllm_run / "predictions.jsonl").read_text() == before
    assert time.monotonic() - start < 60


def test_resized_sizes_are_what_the_processor_feeds_the_model(hf_run, tiny_model, bench):
    # resized_sizes (used to read Qwen2.5-VL pixel answers) must equal the processor's own grid.
    from transformers import AutoProcessor

    from eval.images import load_image

    processor = AutoProcessor.from_pretrained(tiny_model)
    patch = processor.image_processor.patch_size
    for r in lines(hf_run / "predictions.jsonl")[:6]:
        imgs = [load_image(str(bench.parent.parent / p)).image for p in r["images"]]
        grid = processor.image_processor(images=imgs, return_tensors="pt")["image_grid_thw"].tolist()
        assert [[w * patch, h * patch] for _, h, w in grid] == r["resized_sizes"]
