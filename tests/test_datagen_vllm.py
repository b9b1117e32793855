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
from tests.test_eval_openai import server  # noqa: F401 (the module-scoped vLLM server fixture)

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def run_datagen(args):
    return subprocess.run(
        [sys.executable, "-m", "datagen", *args], cwd=REPO, capture_output=True, text=True, timeout=1200
    )


def test_freeform_through_vllm_rejects_garbage_and_reruns_from_cache(server, tiny_model, tmp_path):  # noqa: F811
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
