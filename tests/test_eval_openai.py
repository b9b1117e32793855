"""The openai backend against a real `vllm serve` of the tiny model on 127.0.0.1.

The server runs in .venv-eval; the client runs here in .venv (std-lib HTTP
only). Its answers are checked against transformers on the same instances.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.synthetic import make_synthetic_bench
from eval.tasks import ORDINALS
from tests.conftest import REPO, free_port, run_in

pytestmark = pytest.mark.vllm

COMMON = ["--dtype", "float32", "--max-new-tokens", "32", "--limit", "1"]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return make_synthetic_bench(tmp_path_factory.mktemp("mig"), per_task=2, seed=5)


def openai_cmd(model, bench, out, base, *extra):
    return [
        "-m",
        "eval",
        "run",
        "--backend",
        "openai",
        "--model",
        str(model),
        "--api-base",
        base,
        "--bench",
        str(bench),
        "--output-dir",
        str(out),
        *COMMON[2:],  # not --dtype: the server's engine has its own (`--backend openai` refuses it)
        *extra,
    ]


def test_openai_backend_matches_transformers(server, tiny_model, bench, tmp_path):
    out = tmp_path / "openai"
    # The same server listed twice: requests are spread over several URLs.
    run_in(sys.executable, openai_cmd(tiny_model, bench, out, f"{server},{server}", "--concurrency", "4"))
    ref = tmp_path / "hf"
    run_in(
        sys.executable,
        [
            "-m",
            "eval",
            "run",
            "--backend",
            "hf",
            "--model",
            str(tiny_model),
            "--bench",
            str(bench),
            "--output-dir",
            str(ref),
            *COMMON,
        ],
    )
    got = {r["index"]: r for r in lines(out / "predictions.jsonl")}
    want = {r["index"]: r for r in lines(ref / "predictions.jsonl")}
    assert got.keys() == want.keys() and len(got) == 10
    for i, r in got.items():
        assert r["prompt_tokens"] == want[i]["prompt_tokens"]  # same template, same pixels (PNG data URLs)
        assert r["output_tokens"] == want[i]["output_tokens"]
        # Same tokens; the server's streaming detokenizer only holds back a trailing broken UTF-8 byte run.
        text, ref_text = r["response"], want[i]["response"]
        assert ref_text.startswith(text) and set(ref_text[len(text) :]) <= {"\ufffd"}, (text, ref_text)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["tasks"]) == 10 and metrics["average"]["n"] == 10


def test_openai_mcot_runs_both_steps(server, tiny_model, bench, tmp_path):
    out = tmp_path / "mcot"
    run_in(sys.executable, openai_cmd(tiny_model, bench, out, server, "--mode", "mcot"))
    step1 = {r["index"]: r for r in lines(out / "cot_step1.jsonl")}
    records = lines(out / "predictions.jsonl")
    assert len(records) == 10 and set(step1) == {r["index"] for r in records}
    for r in records:
        assert r["prompt"].startswith(f"Now only look at the {ORDINALS[r['cot_image']]} image. ")
        assert r["step1"]["prompt"] == step1[r["index"]]["prompt"]
        if r["task"] == "region":
            assert r["cot_image"] == 0


def test_unreachable_server_leaves_the_run_resumable(server, tiny_model, bench, tmp_path):
    out = tmp_path / "flaky"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proc = subprocess.run(
        [
            sys.executable,
            *openai_cmd(tiny_model, bench, out, dead, "--tasks", "diff", "--request-timeout", "5"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3 and "rerun the same command" in proc.stderr
    pred = out / "predictions.jsonl"
    assert not (pred.exists() and pred.read_text().strip())  # nothing recorded for failed requests
    assert "Incomplete" in (out / "results.md").read_text()
    run_in(
        sys.executable,
        openai_cmd(tiny_model, bench, out, server, "--tasks", "diff", "--request-timeout", "5"),
    )
    assert len(lines(out / "predictions.jsonl")) == 1
