"""Issue 16, eval: hostile predictions files, benches and output folders.

Through the real command line (`eval.__main__.main`) where the case is a command; the
bench loader and the predictions store directly where it is one of their promises.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.__main__ import main
from eval.bench import load_bench
from eval.predictions import RunStore, append_jsonl, read_jsonl
from eval.synthetic import make_synthetic_bench

ANSWER = [0.1, 0.2, 0.3, 0.4]
HIT = "<|box_start|>(100,200),(300,400)<|box_end|>"


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"bare {name} in metrics.json")

    return json.loads(text, parse_constant=refuse)


def write_predictions(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8"
    )
    return path


def pred(index: int, task: str = "diff", response: str = HIT, answer=ANSWER) -> dict:
    return {"index": index, "task": task, "response": response, "answer": answer}


def score(tmp_path: Path, lines: list, *extra: str) -> tuple[int, Path]:
    path = write_predictions(tmp_path / "run" / "predictions.jsonl", lines)
    out = tmp_path / "scored"
    return main(["score", "--predictions", str(path), "--output-dir", str(out), *extra]), out


def test_one_index_in_two_tasks_is_refused_naming_both_lines(tmp_path, capsys):
    code, out = score(tmp_path, [pred(0), pred(1), pred(1, task="region")])
    err = capsys.readouterr().err
    assert code == 1
    assert "predictions line 2 (task 'diff') and line 3 (task 'region') both give instance 1" in err
    assert not out.exists()


def test_a_repeated_line_for_one_instance_is_noted_not_dropped_silently(tmp_path):
    code, out = score(tmp_path, [pred(0), pred(1, response="no box"), pred(1)])
    assert code == 0
    metrics = _strict_json((out / "metrics.json").read_text())
    assert metrics["tasks"]["diff"]["n"] == 2 and metrics["tasks"]["diff"]["acc@0.5"] == 100.0
    assert "line 3 replaces line 2 for instance 1" in (out / "results.md").read_text()


def test_undecodable_lines_are_ignored_with_their_line_numbers(tmp_path):
    huge = '{"index": 1, "task": "diff", "n": ' + "9" * 5000 + "}"
    deep = '{"index": 2, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    code, out = score(tmp_path, [pred(0), huge, deep, pred(3)])
    assert code == 0
    md = (out / "results.md").read_text()
    assert "line 2: not usable JSON (Exceeds the limit (4300 digits)" in md
    assert "line 3: not usable JSON (nested too deeply)" in md
    assert _strict_json((out / "metrics.json").read_text())["tasks"]["diff"]["n"] == 2


def test_metrics_never_hold_nan_or_infinity(tmp_path):
    lines = [
        pred(0),
        pred(1, response="(" + "9" * 400 + ",1),(2,3)"),  # float() of 400 digits is inf
        '{"index": 2, "task": "diff", "response": "x", "answer": [NaN, 0, 1, 1]}',
        '{"index": 3, "task": "diff", "response": "x", "answer": [0, 0, Infinity, 1]}',
    ]
    code, out = score(tmp_path, lines)
    assert code == 0
    metrics = _strict_json((out / "metrics.json").read_text())
    paper = {k: metrics["tasks"]["diff"][k] for k in ("n", "acc@0.5", "acc@0.3", "acc@0.7", "miou")}
    assert paper == {"n": 2, "acc@0.5": 50.0, "acc@0.3": 50.0, "acc@0.7": 50.0, "miou": 50.0}
    md = (out / "results.md").read_text()
    assert "line 3: `answer` must be 4 numbers (finite)" in md and "line 4: `answer` must be 4 numbers" in md


def test_score_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    path = write_predictions(tmp_path / "predictions.jsonl", [pred(0)])
    target = tmp_path / "taken"
    target.write_text("mine", encoding="utf-8")
    assert main(["score", "--predictions", str(path), "--output-dir", str(target)]) == 1
    assert f"--output-dir {target} is a file, not a folder" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == "mine"


def test_score_never_writes_a_report_over_its_own_predictions(tmp_path, capsys):
    path = write_predictions(tmp_path / "scoring.json", [pred(0)])
    before = path.read_bytes()
    assert main(["score", "--predictions", str(path), "--output-dir", str(tmp_path), "--force"]) == 1
    assert "--predictions and report scoring.json are the same file" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_compare_output_equal_to_a_runs_metrics_is_refused(tmp_path, capsys):
    assert score(tmp_path, [pred(0)])[0] == 0
    metrics = tmp_path / "scored" / "metrics.json"
    before = metrics.read_bytes()
    assert main(["compare", str(tmp_path / "scored"), "--output", str(metrics), "--force"]) == 1
    assert "are the same file" in capsys.readouterr().err and metrics.read_bytes() == before


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic_bench(tmp_path_factory.mktemp("bench"), per_task=1, seed=2)


def _run(bench: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "run",
            "--model",
            "served",
            "--bench",
            str(bench),
            "--output-dir",
            str(out),
            "--backend",
            "openai",
            *extra,
        ]
    )


def test_eval_run_with_a_run_json_holding_a_list_is_refused_clearly(synth, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("[1, 2]", encoding="utf-8")
    assert _run(synth, out) == 1
    err = capsys.readouterr().err
    assert f"{out / 'run.json'} is unreadable (it holds a JSON list, not a run record)" in err
    assert "Traceback" not in err and (out / "run.json").read_text() == "[1, 2]"


def test_eval_run_output_dir_that_is_a_file_and_bench_inside_outputs_are_refused(synth, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine", encoding="utf-8")
    assert _run(synth, taken) == 1
    assert "is a file, not a folder" in capsys.readouterr().err and taken.read_text() == "mine"
    out = tmp_path / "out"
    out.mkdir()
    bench = out / "run.json"
    bench.write_bytes(synth.read_bytes())
    assert _run(bench, out, "--force") == 1
    assert "--bench and --output-dir's run.json are the same file" in capsys.readouterr().err
    assert bench.read_bytes() == synth.read_bytes()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"images": ["./MIG-Bench/images/x\x00.png"]}, "image 0 path holds a NUL byte"),
        ({"images": ["./MIG-Bench/images/\ud800.png"]}, "image 0 path holds '\\ud800', a lone surrogate"),
        ({"question": "Where is the \udfff?"}, "`question` holds '\\udfff', a lone surrogate"),
    ],
)
def test_one_hostile_bench_instance_is_a_problem_not_a_crash(synth, tmp_path, change, reason):
    data = json.loads(synth.read_text(encoding="utf-8"))
    data[1] = {**data[1], **change}
    path = synth.parent / f"hostile_{len(tmp_path.name)}.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # surrogates as \\u escapes, as json writes them
    bench = load_bench(path)
    assert [p.index for p in bench.problems] == [1] and reason in bench.problems[0].reason
    assert len(bench.instances) == len(data) - 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [("9" * 5000, "Exceeds the limit (4300 digits)"), ("[" * 100_000 + "]" * 100_000, "nested too deeply")],
)
def test_an_undecodable_bench_instance_is_a_problem_of_its_own(synth, tmp_path, value, reason):
    records = [json.dumps(r) for r in json.loads(synth.read_text(encoding="utf-8"))]
    records[2] = '{"task": "diff", "x": ' + value + "}"
    path = synth.parent / f"undecodable_{len(value)}.json"
    path.write_text("[\n" + ",\n".join(records) + "\n]\n", encoding="utf-8")
    bench = load_bench(path)
    assert [p.index for p in bench.problems] == [2] and reason in bench.problems[0].reason
    assert "line 4 column 1" in bench.problems[0].reason
    assert len(bench.instances) == len(records) - 1


def test_a_skip_record_with_a_surrogate_is_written_escaped_and_read_back(tmp_path):
    path = tmp_path / "predictions.jsonl"
    append_jsonl(
        path, [{"index": 0, "task": "diff", "skipped": "cannot read image: \ud800.png", "response": ""}]
    )
    append_jsonl(path, [{"index": 1, "task": "diff", "response": "é", "answer": ANSWER}])
    records, problems = read_jsonl(path)
    assert problems == [] and [r["index"] for r in records] == [0, 1]
    assert records[0]["skipped"].endswith("\ud800.png") and records[1]["response"] == "é"


def test_a_run_json_holding_a_list_is_replaced_with_force(tmp_path):
    (tmp_path / "run.json").write_text("[]", encoding="utf-8")
    assert RunStore(tmp_path, {"model": "m"}, force=True).check() is False


def test_a_response_with_a_unicode_line_separator_stays_one_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    append_jsonl(path, [{"index": 0, "task": "diff", "response": "a\u2028b\x85c\x1cd", "answer": ANSWER}])
    records, problems = read_jsonl(path)
    assert problems == [] and records[0]["response"] == "a\u2028b\x85c\x1cd"
