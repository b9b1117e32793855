"""The benchmark table (eval/benchmarks) and RefCOCO/+/g from the `refer` layout.

MIG-Bench's own behaviour is covered, unchanged, by the other test_eval_* files; here: the table,
the RefCOCO loader (splits, one instance per sentence, COCO xywh -> 0-1 boxes, stable indices,
problems scored as misses), scoring through `eval score` by hand, and one `eval run` with the tiny
Qwen2-VL through transformers.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from eval.benchmark import BenchError
from eval.benchmarks import BENCHMARKS, get_benchmark
from eval.benchmarks.mig_bench import REFERENCES as TABLE1
from eval.benchmarks.refcoco import TABLE8
from tests.conftest import REPO, run_in, run_main

SIZES = {1: (640, 480), 2: (500, 375), 3: (333, 500)}
# (ref_id, split, image_id, ann_id, sentences)
REFS = [
    (0, "train", 1, 10, ["a train sentence"]),
    (1, "val", 1, 10, ["man in red", "left man"]),
    (2, "testA", 2, 20, ["dog", "dog"]),  # a repeated sentence is still its own instance
    (3, "testB", 3, 30, ["the cup"]),
    (4, "val", 3, 99, ["missing annotation"]),
    (5, "testB", 2, 21, ["  spaced   out  "]),
]
ANNS = {10: [64, 48, 320, 240], 20: [0, 0, 250, 375], 30: [33.3, 50, 99.9, 100], 21: [100, 75, 50, 75]}


def make_refer_root(root: Path, folder: str = "refcoco", refs_file: str = "refs(unc).p") -> Path:
    images = root / "coco" / "train2014"
    images.mkdir(parents=True, exist_ok=True)
    for image_id, (w, h) in SIZES.items():
        Image.new("RGB", (w, h), (40 * image_id, 90, 160)).save(
            images / f"COCO_train2014_{image_id:012d}.jpg"
        )
    (root / folder).mkdir(parents=True, exist_ok=True)
    refs = [
        {
            "ref_id": rid,
            "split": split,
            "image_id": image_id,
            "ann_id": ann_id,
            "sentences": [{"sent": s, "raw": s} for s in sents],
        }
        for rid, split, image_id, ann_id, sents in REFS
    ]
    if folder == "refcocog":  # umd splits
        for ref in refs:
            ref["split"] = {"testA": "test", "testB": "test"}.get(ref["split"], ref["split"])
    (root / folder / refs_file).write_bytes(pickle.dumps(refs, protocol=2))
    instances = {
        "images": [
            {"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": w, "height": h}
            for i, (w, h) in SIZES.items()
        ],
        "annotations": [
            {"id": a, "image_id": 1 if a == 10 else (2 if a in (20, 21) else 3), "bbox": b}
            for a, b in ANNS.items()
        ],
    }
    (root / folder / "instances.json").write_text(json.dumps(instances))
    return root


def test_the_table_names_each_benchmark_once_and_refuses_unknown_ones():
    assert list(BENCHMARKS) == ["mig-bench", "refcoco", "refcoco+", "refcocog", "mibench", "mmiu"]
    for name in BENCHMARKS:
        bench = get_benchmark(name)
        assert bench.name == name and bench.tasks
        for ref in bench.references:  # reference rows by column name: none names a column the table lacks
            assert set(ref.values) <= {*bench.task_names, "AVE"}, (name, ref.name)
    assert get_benchmark().name == "mig-bench"
    with pytest.raises(ValueError, match="unknown benchmark 'refclef'.*mig-bench"):
        get_benchmark("refclef")


def test_reference_rows_are_keyed_by_name_not_position():
    migician = next(r for r in TABLE1 if r.name == "Migician").values
    assert migician["diff"] == 65.15 and migician["correspondence"] == 34.19 and migician["AVE"] == 63.82
    qwen = next(r for r in TABLE8 if r.name == "Qwen2-VL-7B").values
    assert qwen["refcoco/testB"] == 87.30 and qwen["refcocog/test"] == 87.80 and qwen["AVE"] == 87.96
    # Table 8's AVE is kept as printed: near the mean of its eight columns (a transcription check), but
    # the paper's own AVE is off by up to 0.11 for Shikra, InternVL2-8B and GroundingGPT.
    for row in TABLE8:
        eight = [v for k, v in row.values.items() if k != "AVE"]
        assert sum(eight) / 8 == pytest.approx(row.values["AVE"], abs=0.12), row.name
    plus = get_benchmark("refcoco+").reference("Migician").values
    assert plus == {"val": 86.13, "testA": 91.06, "testB": 79.93}


def test_refcoco_loads_one_instance_per_sentence_of_the_standard_splits(tmp_path):
    root = make_refer_root(tmp_path)
    bench = get_benchmark("refcoco").load(root)
    by_split = {}
    for inst in bench.instances:
        by_split.setdefault(inst.task, []).append(inst)
    assert {k: len(v) for k, v in by_split.items()} == {"val": 2, "testA": 2, "testB": 2}
    assert bench.total == 7  # every sentence of val/testA/testB; train is not a benchmark split
    man = by_split["val"][0]
    assert man.index == 0 and man.question.endswith("<|object_ref_start|>man in red<|object_ref_end|>")
    assert man.question.startswith("Please provide the bounding box coordinate")
    assert man.answer == pytest.approx([0.1, 0.1, 0.6, 0.6])  # xywh 64,48,320,240 on 640x480
    assert Path(man.image_paths[0]).is_file() and man.images == ["COCO_train2014_000000000001.jpg"]
    cup = by_split["testB"][0]
    assert cup.answer == pytest.approx([33.3 / 333, 0.1, 133.2 / 333, 0.3])
    assert by_split["testB"][1].question.endswith("spaced out<|object_ref_end|>")
    # the ref whose annotation is missing: reported by index, later scored as a miss
    assert [(p.index, p.task) for p in bench.problems] == [(5, "val")]
    assert "ann_id 99 is not in instances.json" in bench.problems[0].reason


def test_refcoco_indices_do_not_move_when_one_split_is_picked(tmp_path):
    root = make_refer_root(tmp_path)
    full = {i.index: i.question for i in get_benchmark("refcoco").load(root).instances}
    only = get_benchmark("refcoco").load(root, task_names=["testB"])
    assert {i.task for i in only.instances} == {"testB"}
    assert all(full[i.index] == i.question for i in only.instances)
    limited = get_benchmark("refcoco").load(root, limit=1)
    assert sorted(i.task for i in limited.instances) == ["testA", "testB", "val"]


def test_refcocog_uses_the_umd_splits(tmp_path):
    root = make_refer_root(tmp_path, "refcocog", "refs(umd).p")
    bench = get_benchmark("refcocog").load(root)
    assert {i.task for i in bench.instances} == {"val", "test"}
    with pytest.raises(BenchError, match=r"unknown split\(s\) \['testA'\].*val, test"):
        get_benchmark("refcocog").load(root, task_names=["testA"])


def test_refcoco_layout_errors_name_the_file(tmp_path):
    with pytest.raises(BenchError, match=r"refcoco\+/refs\(unc\)\.p not found.*--data-root"):
        get_benchmark("refcoco+").load(tmp_path)
    root = make_refer_root(tmp_path)
    (root / "refcoco" / "instances.json").write_text("[1, 2")
    with pytest.raises(BenchError, match="refcoco/instances.json: invalid JSON"):
        get_benchmark("refcoco").load(root)
    (root / "refcoco" / "refs(unc).p").write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(BenchError, match="not a readable refs pickle"):
        get_benchmark("refcoco").load(root)


def test_a_missing_image_is_a_problem_not_a_crash(tmp_path):
    root = make_refer_root(tmp_path)
    (root / "coco" / "train2014" / "COCO_train2014_000000000002.jpg").unlink()
    bench = get_benchmark("refcoco").load(root)
    missing = [p for p in bench.problems if "image not found" in p.reason]
    assert sorted(p.task for p in missing) == ["testA", "testA", "testB"]


def _cli(*args, check=True):
    proc = run_main("eval", args)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_refcoco_scores_by_hand_through_eval_score(tmp_path):
    """Predictions written as a RefCOCO run writes them; right boxes 100, wrong 0, per split."""
    bench = get_benchmark("refcoco").load(make_refer_root(tmp_path / "root"))
    run = tmp_path / "run"
    run.mkdir()
    lines = []
    for k, inst in enumerate(bench.instances):
        x1, y1, x2, y2 = (round(v * 1000) for v in inst.answer)
        box = f"({x1},{y1}),({x2},{y2})" if k % 2 == 0 else "(0,0),(5,5)"
        lines.append(
            {
                "index": inst.index,
                "task": inst.task,
                "images": inst.images,
                "response": f"<|box_start|>{box}<|box_end|>",
                "answer": inst.answer,
                "target_image": 0,
            }
        )
    lines.append({"index": 5, "task": "val", "images": None, "skipped": "ann missing", "response": ""})
    (run / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "run.json").write_text(json.dumps({"protocol": {"benchmark": "refcoco"}}))
    out = tmp_path / "scored"
    proc = _cli("score", "--predictions", str(run / "predictions.jsonl"), "--output-dir", str(out))
    assert proc.stdout.startswith("RefCOCO Acc@0.5: val ")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["benchmark"] == "refcoco" and list(metrics["tasks"]) == ["val", "testA", "testB"]
    assert {t: m["n"] for t, m in metrics["tasks"].items()} == {"val": 3, "testA": 2, "testB": 2}
    assert {t: m["acc@0.5"] for t, m in metrics["tasks"].items()} == {
        "val": 33.3333,
        "testA": 50.0,
        "testB": 50.0,
    }
    results = (out / "results.md").read_text()
    assert "# RefCOCO results" in results and "the paper's Table 8" in results
    assert "| Migician (paper, the paper's Table 8) | 91.62 | 93.49 | 87.22 | – |" in results
    # a RefCOCO predictions file is not a MIG-Bench one
    other = _cli(
        "score",
        "--predictions",
        str(run / "predictions.jsonl"),
        "--output-dir",
        str(tmp_path / "x"),
        "--benchmark",
        "mig-bench",
        check=False,
    )
    assert other.returncode == 1 and "comes from a refcoco run" in other.stderr
    # compare puts each benchmark in its own table
    table = _cli("compare", str(out)).stdout
    assert (
        table.startswith("RefCOCO acc@0.5 (%)") and "| scored | 33.33 | 50.00 | 50.00 | 44.44 | 3 |" in table
    )


def test_run_needs_the_benchmarks_own_data_option(tmp_path):
    proc = _cli(
        "run",
        "--model",
        "m",
        "--benchmark",
        "refcoco",
        "--bench",
        "x.json",
        "--output-dir",
        str(tmp_path),
        check=False,
    )
    assert proc.returncode == 2 and "--bench is not an option of --benchmark refcoco" in proc.stderr
    proc = _cli("run", "--model", "m", "--output-dir", str(tmp_path), check=False)
    assert proc.returncode == 2 and "--benchmark mig-bench needs --bench" in proc.stderr
    proc = _cli(
        "run", "--model", "m", "--benchmark", "refcoco", "--data-root", str(tmp_path), "--mode", "cot",
        "--output-dir", str(tmp_path / "o"), check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "RefCOCO defines no cot prompts" in proc.stderr
    listed = _cli("benchmarks").stdout
    assert "refcocog" in listed and "--data-root DIR" in listed and "tasks: val, test" in listed


@pytest.mark.slow
def test_refcoco_run_with_the_tiny_model(tmp_path, tiny_model):
    """`eval run --benchmark refcoco` end to end through transformers: every instance answered and scored."""
    root = make_refer_root(tmp_path / "root")
    out = tmp_path / "out"
    args = [
        "-m",
        "eval",
        "run",
        "--benchmark",
        "refcoco",
        "--data-root",
        str(root),
        "--model",
        str(tiny_model),
    ]
    args += ["--backend", "hf", "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "8"]
    run_in(str(Path(REPO) / ".venv" / "bin" / "python"), [*args, "--output-dir", str(out)], timeout=600)
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["index"] for p in preds) == list(range(7))
    assert [p for p in preds if p.get("skipped")][0]["index"] == 5
    answered = [p for p in preds if not p.get("skipped")]
    assert all(p["prompt"].startswith("Please provide") and p["target_image"] == 0 for p in answered)
    run = json.loads((out / "run.json").read_text())
    assert run["protocol"]["benchmark"] == "refcoco" and run["protocol"]["format_suffix"] == ""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["benchmark"] == "refcoco" and metrics["average"]["n"] == 7
    # resumable like every run: a second call generates nothing
    again = run_in(
        str(Path(REPO) / ".venv" / "bin" / "python"), [*args, "--output-dir", str(out)], timeout=600
    )
    assert "already generated" in again.stderr


def test_suite_parts_and_a_suite_without_any_data(tmp_path):
    from eval.suite import parse_suite

    assert parse_suite(None) == ("mig", "refcoco", "multi-image")
    with pytest.raises(ValueError, match="unknown suite part"):
        parse_suite("mig,tables")
    proc = _cli("suite", "--model", "m", "--output-dir", str(tmp_path / "s"), check=False)
    assert proc.returncode == 1 and "no benchmark of the suite has data" in proc.stderr
    assert "mig-bench: no data: give --mig-bench" in proc.stderr and "lmms-eval" in proc.stderr
    report = (tmp_path / "s" / "suite.md").read_text()
    assert "skipped **refcoco+**: no data: give --refcoco-root" in report


@pytest.mark.slow
def test_suite_runs_what_has_data_and_lays_out_tables_1_and_8(tmp_path, tiny_model):
    """`eval suite` on the tiny model: MIG-Bench (synthetic) and RefCOCO run, RefCOCO+/g and the
    multi-image part are skipped with their reasons; a rerun resumes; compare reads the suite folder."""
    from eval.synthetic import make_synthetic_bench

    mig = make_synthetic_bench(tmp_path / "mig", per_task=1)
    root = make_refer_root(tmp_path / "root")
    out = tmp_path / "suite"
    args = [
        "-m",
        "eval",
        "suite",
        "--model",
        str(tiny_model),
        "--output-dir",
        str(out),
        "--mig-bench",
        str(mig),
    ]
    args += ["--refcoco-root", str(root), "--backend", "hf", "--device", "cpu", "--dtype", "float32"]
    args += ["--max-new-tokens", "8", "--label", "tiny"]
    py = str(Path(REPO) / ".venv" / "bin" / "python")
    first = run_in(py, args, timeout=900)
    assert "MIG-Bench Acc@0.5:" in first.stdout and "RefCOCO Acc@0.5:" in first.stdout
    summary = json.loads((out / "suite.json").read_text())
    assert sorted(summary["results"]) == ["mig-bench", "refcoco"] and not summary["incomplete"]
    assert summary["skipped"]["refcocog"].endswith("refcocog does not exist")
    report = (out / "suite.md").read_text()
    assert "## MIG-Bench Acc@0.5 (paper Table 1)" in report and "| Migician (paper) | 65.15 |" in report
    assert "## RefCOCO / RefCOCO+ / RefCOCOg Acc@0.5 (paper Table 8)" in report
    assert "| Qwen2-VL-7B (paper) | 91.70 |" in report and "AVE is given only when all eight" in report
    assert (out / "mig-bench" / "results.md").is_file() and (out / "refcoco" / "results.md").is_file()
    again = run_in(py, args, timeout=900)
    assert again.stderr.count("already generated") == 2
    table = _cli("compare", str(out)).stdout
    assert "MIG-Bench acc@0.5" in table and "RefCOCO acc@0.5" in table and "| tiny |" not in table
    assert table.count("| suite |") == 2  # rows named after the suite folder


def test_a_backend_refuses_flags_it_does_not_read(tmp_path):
    """`--backend openai --tensor-parallel 4` used to be ignored silently; now it is a usage error."""
    base = ["run", "--model", "m", "--bench", "x.json", "--output-dir", str(tmp_path)]
    proc = _cli(*base, "--backend", "openai", "--tensor-parallel", "4", check=False)
    assert proc.returncode == 2 and "--tensor-parallel is not an option of --backend openai" in proc.stderr
    assert "--backend openai takes --api-base, --api-key" in proc.stderr
    proc = _cli(*base, "--backend", "hf", "--api-base=http://x/v1", check=False)
    assert proc.returncode == 2 and "--api-base is not an option of --backend hf" in proc.stderr
    proc = _cli(
        "suite",
        "--model",
        "m",
        "--output-dir",
        str(tmp_path),
        "--backend",
        "vllm",
        "--concurrency",
        "3",
        check=False,
    )
    assert proc.returncode == 2 and "--concurrency is not an option of --backend vllm" in proc.stderr


def test_the_backend_table_builds_by_name_and_says_what_is_missing():
    """One entry per backend; the vLLM one outside .venv-eval names the environment to use."""
    import importlib.util

    from eval.backends import BACKEND_CLASSES, BACKEND_FLAGS, BackendUnavailable, make_backend

    assert set(BACKEND_CLASSES) == {"vllm", "hf", "openai"}
    assert all(set(who) <= set(BACKEND_CLASSES) for who in BACKEND_FLAGS.values())
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        make_backend("tgi", "m", {})
    if importlib.util.find_spec("vllm") is None:  # the training environment, where the suite runs
        with pytest.raises(BackendUnavailable, match=r"vllm backend cannot be used here.*\.venv-eval"):
            make_backend("vllm", "m", {})
    served = make_backend("openai", "served", {"api_base": "http://127.0.0.1:9/v1", "concurrency": 2})
    assert served.client.urls == ["http://127.0.0.1:9/v1/chat/completions"] and served.concurrency == 2
