"""The free-form pipeline against a real vLLM OpenAI-compatible server serving the tiny Qwen2-VL.

Why: the stand-in server proves the client's retry logic; only a real server proves the wire format
(images as data URLs, the chat template, usage counts) and that every step runs end to end. The tiny
model's answers are garbage, so the run must end with rejects and their reasons, and a rerun must
make zero new requests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from datagen.parsing import REASONS
from tests.conftest import REPO
from tests.test_datagen_pipeline import ff_args, make_detections

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def run_datagen(args):
    return subprocess.run(
        [sys.executable, "-m", "datagen", *args], cwd=REPO, capture_output=True, text=True, timeout=1200
    )


def test_freeform_through_vllm_rejects_garbage_and_reruns_from_cache(server, tiny_model, tmp_path):
    det = make_detections(tmp_path / "det", n=8)
    out = tmp_path / "out"
    args = ff_args(det, out, server, "--max-tokens", "24", "--concurrency", "4")
    for flag in ("--caption-model", "--refine-model", "--qa-model"):
        args[args.index(flag) + 1] = str(tiny_model)
    first = run_datagen(args)
    assert first.returncode in (0, 1), first.stderr[-3000:]
    report = json.loads((out / "datagen_freeform.report.json").read_text())
    steps = report["steps"]
    assert {k: steps[k]["requests"] for k in steps} == {"caption": 8, "refine": 8, "qa": 2}
    assert all(steps[k]["completion_tokens"] > 0 and steps[k]["prompt_tokens"] > 0 for k in steps)
    rejects = [json.loads(x) for x in (out / "datagen_freeform.rejects.jsonl").read_text().splitlines() if x]
    assert rejects, "garbage answers must be rejected"
    assert {r["reason"] for r in rejects} <= set(REASONS)
    assert {r["step"] for r in rejects} >= {"refine", "qa"}
    # 24 tokens of a random model never make a refinement: every image keeps its original boxes.
    assert sum(steps["refine"]["rejects"].values()) >= 8
    if first.returncode == 1:
        assert "no group gave a valid QA pair" in first.stderr
    second = run_datagen([*args, "--force"])
    assert second.returncode == first.returncode, second.stderr[-3000:]
    again = json.loads((out / "datagen_freeform.report.json").read_text())["steps"]
    assert {k: again[k]["requests"] for k in again} == {"caption": 0, "refine": 0, "qa": 0}
    assert {k: again[k]["cache_hits"] for k in again} == {"caption": 8, "refine": 8, "qa": 2}
    assert {k: again[k]["rejects"] for k in again} == {k: steps[k]["rejects"] for k in steps}


def test_trajectories_through_vllm_reject_garbage_and_rerun_from_cache(server, tiny_model, tmp_path):
    """MIRG-RL's trajectory pipeline against the same real server: every CoT of a random model is
    rejected with a reason of the table, nothing is written, and a rerun asks nothing new."""
    from converters.trajectories import PROMPT_SUFFIX
    from datagen.trajectories import REASONS as TRAJ_REASONS

    det = make_detections(tmp_path / "det", n=4)
    imgs = [str(det.parent / "images" / f"{i:03d}.png") for i in range(4)]
    human = "<image>\n<image>\nFind the dog in the second image." + PROMPT_SUFFIX
    recs = [
        {"id": f"r{k}", "images": imgs[k : k + 2], "task": "reasoning", "image_index": 2, "box": [100, 200, 300, 400],
         "num_images": 2, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": "x"}]}
        for k in range(3)
    ]  # fmt: skip
    rl = tmp_path / "mg_rl.json"
    rl.write_text(json.dumps(recs))
    out = tmp_path / "traj"
    args = ["trajectories", "--input", str(rl), "--api-base", server, "--output", str(out), "--quiet"]
    args += ["--max-tokens", "24", "--retries", "1"]
    for flag in ("--cot-model", "--mapping-model", "--reassembly-model"):
        args += [flag, str(tiny_model)]
    first = run_datagen(args)
    assert first.returncode in (0, 1), first.stderr[-3000:]
    steps = json.loads((out / "datagen_traj.report.json").read_text())["steps"]
    assert steps["cot"]["requests"] == 3 and steps["cot"]["prompt_tokens"] > 0
    rejects = [json.loads(x) for x in (out / "datagen_traj.rejects.jsonl").read_text().splitlines() if x]
    assert rejects and {r["reason"] for r in rejects} <= set(TRAJ_REASONS) | set(REASONS)  # + the parsers'
    assert {r["step"] for r in rejects} == {"cot"}  # nothing gets past a garbage chain of thought
    if first.returncode == 1:
        assert "no record gave a trajectory" in first.stderr
    second = run_datagen([*args, "--force"])
    assert second.returncode == first.returncode, second.stderr[-3000:]
    again = json.loads((out / "datagen_traj.report.json").read_text())["steps"]
    assert all(again[k]["requests"] == 0 for k in ("cot", "mapping", "reassembly"))
    assert again["cot"]["cache_hits"] == 3
