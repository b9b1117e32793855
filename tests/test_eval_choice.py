"""MIBench and MMIU: their own loaders (published schemas), option matching, accuracy, the suite's Table 2.

The files are written here in each release's layout: MIBench's multi_image_instruction.json and
multimodal_knowledge_seeking.json (records with `image`, `options`, `answer` text) and MMIU's all.json
(`input_image_path` as `../MMIU-Benchmark/<task>/..`, lettered `options`, `output` letter).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from eval.benchmark import BenchError
from eval.benchmarks import get_benchmark
from eval.choice import parse_options, pick
from tests.conftest import REPO, run_in
from tests.test_eval_benchmarks import _cli

MII = [
    # task, images, options, answer
    ("general_comparison", ["mii/a.png", "mii/b.png"], ["red", "blue", "green"], "blue"),
    ("general_comparison", ["mii/a.png", "mii/b.png"], ["one", "two"], "one"),
    ("subtle_difference", ["mii/b.png", "mii/a.png"], ["the left", "the right one"], "the right one"),
    ("subtle_difference", ["mii/a.png"], ["yes", "no"], "maybe"),  # not an option: a problem
    ("temporal_reasoning", ["mii/gone.png"], ["x", "y"], "x"),  # a missing image: a problem
]
MKS = [
    ("text_rich_images", ["mks/c.png", "mks/a.png"], ["A sign", "A book"], "A book."),
    ("text_rich_images", ["mks/c.png"], ["cat", "dog"], "dog"),
]


def _png(path: Path, color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), color).save(path)


def make_mibench(root: Path) -> Path:
    for name, color in (("mii/a.png", (200, 0, 0)), ("mii/b.png", (0, 0, 200)), ("mks/a.png", (9, 9, 9))):
        _png(root / name, color)
    _png(root / "mks/c.png", (0, 200, 0))
    for file, rows in (("multi_image_instruction.json", MII), ("multimodal_knowledge_seeking.json", MKS)):
        records = [
            {"task": t, "image": imgs, "question": f"Question {k}?\n", "options": opts, "answer": ans}
            for k, (t, imgs, opts, ans) in enumerate(rows)
        ]
        (root / file).write_text(json.dumps(records))
    return root


def make_mmiu(root: Path) -> Path:
    """MMIU's all.json under a root that is the MMIU-Benchmark folder its paths name."""
    tasks = ("forensic_detection_blink", "spot_the_diff", "a_task_added_later")
    for t in tasks:
        for k in range(2):
            _png(root / t / f"{t}_{k}.jpg", (30 * k, 60, 90))
    records = []
    for t in tasks:
        for k, out in enumerate(("B", "A")):
            paths = [f"../MMIU-Benchmark/{t}/{t}_0.jpg", f"./{t}/{t}_1.jpg"]
            records.append(
                {
                    "task": t,
                    "visual_input_component": "natural image",
                    "source": "test",
                    "options": "A: the first image\nB: the second image",
                    "question": f"Which image, {k}?",
                    "context": "Select from the following choices.\nA: the first image\nB: the second image\n",
                    "input_image_path": paths,
                    "output": out,
                }
            )
    records.append(dict(records[0], output="E"))  # a letter that is not an option: a problem
    records.append(dict(records[0], options="first\nsecond"))  # options not lettered: a problem
    (root / "all.json").write_text(json.dumps(records))
    return root


# ---------------------------------------------------------------- reading an answer


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", 1),
        ("(B)", 1),
        ("b.", 1),
        ("C: the third", 2),
        ("Answer: D", 3),
        ("The answer is (A).", 0),
        ("E", None),  # no fifth option
        ("the second image", 1),  # an option's text
        ("I think it is the first image, clearly", 0),  # "I" is no option letter
        ("A dog? No: the fourth", 3),  # nor is an article
        ("a", 0),
        ("both the first image and the second image", None),  # two options: unanswered
        ("", None),
        ("Z", None),
    ],
)
def test_lettered_answers(response, expected):
    options = ["the first image", "the second image", "the third", "the fourth"]
    assert pick(response, options, letters=True) == expected


def test_text_answers_and_options_inside_longer_options():
    options = ["red", "dark red", "blue"]
    assert pick("Dark red.", options, letters=False) == 1  # exact, case and period aside
    assert pick("it looks dark red to me", options, letters=False) == 1  # "red" is inside "dark red"
    assert pick("red or blue", options, letters=False) is None
    assert pick("A", ["A", "B"], letters=False) == 0  # MIBench: a lone letter is an option's text only
    assert pick("A", ["x", "y"], letters=False) is None


@pytest.mark.parametrize(
    "hostile", [None, 7, ["B"], "\x00B", "B" * 10_000_000, "(" * 100_000, "answer is " * 50_000, "\ud800"]
)
def test_hostile_responses_never_raise(hostile):
    assert pick(hostile, ["a", "b"], letters=True) in (None, 0, 1)


def test_parse_options():
    assert parse_options("A: x\nB: y y\n") == ["x", "y y"]
    assert parse_options("(A) x\n(B) y") == ["x", "y"]
    assert parse_options("A: x\nC: y") is None  # letters must run A, B, ...
    assert parse_options("x\ny") is None and parse_options(None) is None and parse_options("") is None


# ---------------------------------------------------------------- loaders


def test_mibench_loads_both_files_with_stable_indices_and_problems(tmp_path):
    root = make_mibench(tmp_path / "mib")
    bench = get_benchmark("mibench").load(root)
    assert bench.total == 7 and [i.index for i in bench.instances] == [0, 1, 2, 5, 6]
    first = bench.instances[0]
    assert first.options == ["red", "blue", "green"] and first.correct == 1
    assert (
        first.question == "Question 0?\nPlease only strictly answer from the choice list: red | blue | green"
    )
    assert first.image_paths == [str(root / "mii/a.png"), str(root / "mii/b.png")]
    assert bench.instances[3].correct == 1  # "A book." is the option "A book"
    reasons = {p.index: p.reason for p in bench.problems}
    assert (
        "matches none of its options" in reasons[3] and "multi_image_instruction.json record 3" in reasons[3]
    )
    assert reasons[4].startswith("multi_image_instruction.json record 4: image not found:")
    # one task picked: the same indices
    only = get_benchmark("mibench").load(root, tasks=["text_rich_images"])
    assert [i.index for i in only.instances] == [5, 6] and not only.problems
    with pytest.raises(BenchError, match="unknown task"):
        get_benchmark("mibench").load(root, tasks=["no_such_task"])


def test_mibench_layout_errors_name_the_file(tmp_path):
    with pytest.raises(BenchError, match="holds none of multi_image_instruction.json"):
        get_benchmark("mibench").load(tmp_path)
    (tmp_path / "multi_image_instruction.json").write_text('{"task": 1}')
    with pytest.raises(BenchError, match="multi_image_instruction.json holds a JSON dict"):
        get_benchmark("mibench").load(tmp_path)
    (tmp_path / "multi_image_instruction.json").write_text("[{")
    with pytest.raises(BenchError, match="invalid JSON"):
        get_benchmark("mibench").load(tmp_path)
    (tmp_path / "multi_image_instruction.json").write_text(
        json.dumps([3, {"task": "x"}, {"task": "logical_reasoning"}])
    )
    bench = get_benchmark("mibench").load(tmp_path)
    reasons = [p.reason for p in bench.problems]
    assert reasons[0].endswith("no `task`") and "unknown task 'x'" in reasons[1]
    assert "`question` is not a non-empty string" in reasons[2] and not bench.instances


def test_mmiu_resolves_both_published_path_forms_and_keeps_the_datas_tasks(tmp_path):
    root = make_mmiu(tmp_path / "MMIU-Benchmark")
    bench = get_benchmark("mmiu").load(root)
    assert len(bench.instances) == 6 and bench.total == 8
    inst = bench.instances[0]
    t = "forensic_detection_blink"
    assert inst.image_paths == [str(root / t / f"{t}_0.jpg"), str(root / t / f"{t}_1.jpg")]
    assert inst.options == ["the first image", "the second image"] and inst.correct == 1
    assert inst.question.startswith("Question:\nWhich image, 0?\nSpecifically:\nSelect from")
    assert {i.task for i in bench.instances} == {t, "spot_the_diff", "a_task_added_later"}
    reasons = [p.reason for p in bench.problems]
    assert reasons[0] == "all.json record 6: its answer is not one of its options"
    assert "is not lettered lines" in reasons[1]


# ---------------------------------------------------------------- scoring a predictions file


def _predictions(bench, answer) -> list[dict]:
    lines = [
        {
            "index": i.index,
            "task": i.task,
            "images": i.images,
            "response": answer(i),
            "options": i.options,
            "correct": i.correct,
        }
        for i in bench.instances
    ]
    lines += [
        {"index": p.index, "task": p.task, "images": None, "skipped": p.reason, "response": ""}
        for p in bench.problems
    ]
    return lines


def test_mmiu_scores_by_hand_macro_and_micro(tmp_path):
    bench = get_benchmark("mmiu").load(make_mmiu(tmp_path / "MMIU-Benchmark"))
    letters = "AB"
    # forensic: right by letter (its two problems are misses); spot_the_diff: one option's text for both
    # (right once); the added task: one answer naming no option, one wrong letter
    answers = {
        "forensic_detection_blink": lambda i: letters[i.correct],
        "spot_the_diff": lambda i: "It is the second image.",
        "a_task_added_later": lambda i: "no idea" if i.correct == 1 else "B",
    }
    run = tmp_path / "run"
    run.mkdir()
    lines = _predictions(bench, lambda i: answers[i.task](i))
    (run / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "scored"
    proc = _cli(
        "score",
        "--benchmark",
        "mmiu",
        "--predictions",
        str(run / "predictions.jsonl"),
        "--output-dir",
        str(out),
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["benchmark"] == "mmiu"
    # the two problems are forensic_detection_blink records: 2 right of 4 there
    acc = {t: m["accuracy"] for t, m in metrics["tasks"].items()}
    assert acc == {"forensic_detection_blink": 50.0, "spot_the_diff": 50.0, "a_task_added_later": 0.0}
    assert metrics["average"]["accuracy"] == 33.3333  # the mean over tasks
    assert metrics["average"]["micro"] == 37.5 and metrics["average"]["n"] == 8  # 3 of 8 questions
    unanswered = {t: m["unanswered"] for t, m in metrics["tasks"].items()}
    assert unanswered == {"forensic_detection_blink": 2, "spot_the_diff": 0, "a_task_added_later": 1}
    assert metrics["average"]["unanswered"] == 3
    assert "MMIU accuracy: AVE 33.33" in proc.stdout
    results = (out / "results.md").read_text()
    assert "| Migician (paper, the paper's Table 2) | 60.32 |" in results
    assert "MMIU's gpt-4o-mini matching is not used" in results and not (out / "radar.png").exists()
    assert "average,micro,8,37.5,3" in (out / "metrics.csv").read_text()
    table = _cli("compare", str(out)).stdout
    assert table.startswith("MMIU accuracy (%)") and "| scored | 33.33 | 3 |" in table


def test_mibench_scores_by_hand_and_ignores_lines_without_options(tmp_path):
    bench = get_benchmark("mibench").load(make_mibench(tmp_path / "mib"))
    run = tmp_path / "run"
    run.mkdir()
    lines = _predictions(bench, lambda i: i.options[i.correct])  # every answer right, in Migician's form
    lines.append({"index": 99, "task": "general_comparison", "response": "red", "correct": 0})  # no options
    (run / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "run.json").write_text(json.dumps({"protocol": {"benchmark": "mibench"}}))
    out = tmp_path / "scored"
    _cli("score", "--predictions", str(run / "predictions.jsonl"), "--output-dir", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    acc = {t: m["accuracy"] for t, m in metrics["tasks"].items()}
    # the two problems (an answer that is no option, a missing image) are misses
    assert acc == {
        "general_comparison": 100.0,
        "subtle_difference": 50.0,
        "temporal_reasoning": 0.0,
        "text_rich_images": 100.0,
    }
    assert metrics["groups"] == {"MII": {"n": 5, "accuracy": 50.0}, "MKS": {"n": 2, "accuracy": 100.0}}
    assert metrics["average"]["accuracy"] == 62.5
    scoring = json.loads((out / "scoring.json").read_text())
    assert any("line 8" in n and "no options" in n for n in scoring["notes"])


def test_a_box_suffix_is_refused_for_a_choice_benchmark(tmp_path):
    root = make_mibench(tmp_path / "mib")
    proc = _cli(
        "run", "--model", "m", "--benchmark", "mibench", "--data-root", str(root), "--format-suffix", "script",
        "--output-dir", str(tmp_path / "o"), check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "asks its own multiple-choice prompt" in proc.stderr
    listed = _cli("benchmarks").stdout
    assert "mibench" in listed and "mmiu" in listed and "the data's own (60 known)" in listed


@pytest.mark.slow
def test_suite_multi_image_runs_mibench_and_mmiu_with_the_tiny_model(tmp_path, tiny_model):
    """`eval suite --suite multi-image` through transformers: MIBench and MMIU answered and scored into
    Table 2's layout, the lmms-eval columns skipped with their reasons; a rerun generates nothing."""
    out = tmp_path / "suite"
    args = [
        "-m",
        "eval",
        "suite",
        "--suite",
        "multi-image",
        "--model",
        str(tiny_model),
        "--output-dir",
        str(out),
    ]
    args += [
        "--mibench",
        str(make_mibench(tmp_path / "mib")),
        "--mmiu",
        str(make_mmiu(tmp_path / "MMIU-Benchmark")),
    ]
    args += [
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--max-new-tokens",
        "6",
        "--label",
        "tiny",
    ]
    py = str(Path(REPO) / ".venv" / "bin" / "python")
    first = run_in(py, args, timeout=900)
    assert "MIBench accuracy: GC " in first.stdout and "MMIU accuracy: AVE " in first.stdout
    summary = json.loads((out / "suite.json").read_text())
    assert sorted(summary["results"]) == ["mibench", "mmiu"] and not summary["incomplete"]
    assert summary["skipped"]["muirbench"].startswith("no data: give --muirbench")
    preds = [json.loads(x) for x in (out / "mibench" / "predictions.jsonl").read_text().splitlines()]
    answered = [p for p in preds if not p.get("skipped")]
    assert len(answered) == 5 and all(
        p["prompt"].endswith("choice list: " + " | ".join(p["options"])) for p in answered
    )
    assert all(isinstance(p["hit"], bool) for p in answered)
    report = (out / "suite.md").read_text()
    assert "## Multi-image understanding, accuracy % (paper Table 2)" in report
    mib = summary["results"]["mibench"]["average"]["accuracy"]
    mmiu = summary["results"]["mmiu"]["average"]["accuracy"]
    assert f"| **tiny** (this run) | – | – | {mib:.2f} | – | {mmiu:.2f} | – |" in report
    assert "| Migician (paper) | 53.69 | 51.53 | 71.42 | 69.12 | 60.32 | 61.51 |" in report
    again = run_in(py, args, timeout=900)
    assert again.stderr.count("already generated") == 2
