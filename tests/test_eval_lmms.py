"""lmms-eval 0.7.3 (in .venv-eval): wrapper tasks over local data, and MIG-Bench as an lmms-eval task.

Data are small parquet files in each benchmark's published schema (MuirBench, the 14 BLINK subtasks,
Mantis-Eval), written here; nothing is downloaded (HF_*_OFFLINE is set by the runner). The MIG-Bench
task is checked against `eval score` on the same responses, replayed through lmms-eval's own
`from_log` model so the numbers are not all zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, run_in

EVAL_PY = str(REPO / ".venv-eval" / "bin" / "python")

pytestmark = pytest.mark.vllm


def _images(n, seed=0):
    from PIL import Image

    return [Image.new("RGB", (56 + 8 * k, 56), (30 * k + seed, 90, 160)) for k in range(n)]


def _parquet(path: Path, rows: dict, features) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))


def make_muirbench(root: Path) -> Path:
    import datasets as d

    rows = {
        "idx": ["0", "1", "2"],
        "task": ["Counting", "Ordering", "Counting"],
        "image_relation": ["Narrative"] * 3,
        "image_type": ["Photo"] * 3,
        "question": [
            "How many dogs? <image> <image>",
            "Which comes first? <image>",
            "Count cups <image> <image>",
        ],
        "options": [["1", "2"], ["a", "b", "c"], ["3", "4"]],
        "answer": ["A", "C", "B"],
        "image_list": [_images(2), _images(1), _images(2, 5)],
    }
    feats = d.Features(
        {
            **{
                k: d.Value("string")
                for k in ("idx", "task", "image_relation", "image_type", "question", "answer")
            },
            "options": d.Sequence(d.Value("string")),
            "image_list": d.Sequence(d.Image()),
        }
    )
    _parquet(root / "data" / "test-00000-of-00001.parquet", rows, feats)
    return root


def make_blink(root: Path) -> Path:
    import datasets as d

    from eval.lmms.wrappers import _BLINK_SUBTASKS

    feats = d.Features(
        {
            "idx": d.Value("string"),
            "question": d.Value("string"),
            "sub_task": d.Value("string"),
            "image_1": d.Image(),
            "image_2": d.Image(),
            "image_3": d.Image(),
            "image_4": d.Image(),
            "choices": d.Sequence(d.Value("string")),
            "answer": d.Value("string"),
            "prompt": d.Value("string"),
        }
    )
    for folder in _BLINK_SUBTASKS.values():
        img = _images(2)
        rows = {
            "idx": [f"val_{folder}_1"],
            "question": ["Which one?"],
            "sub_task": [folder],
            "image_1": [img[0]],
            "image_2": [img[1]],
            "image_3": [None],
            "image_4": [None],
            "choices": [["(A) left", "(B) right"]],
            "answer": ["(A)"],
            "prompt": ["Which one?\nSelect from the following choices.\n(A) left\n(B) right"],
        }
        _parquet(root / folder / "val-00000-of-00001.parquet", rows, feats)
    return root


def make_mantis(root: Path) -> Path:
    import datasets as d

    rows = {
        "id": ["m0", "m1"],
        "question_type": ["multi-choice", "short-answer"],
        "question": ["Which image is brighter? <image> <image>", "What is in both? <image> <image>"],
        "options": [["(A) first", "(B) second"], []],
        "answer": ["A", "a square"],
        "images": [_images(2), _images(2, 9)],
        "data_source": ["synthetic", "synthetic"],
        "category": ["brightness", "objects"],
    }
    feats = d.Features(
        {
            **{
                k: d.Value("string")
                for k in ("id", "question_type", "question", "answer", "data_source", "category")
            },
            "options": d.Sequence(d.Value("string")),
            "images": d.Sequence(d.Image()),
        }
    )
    _parquet(root / "mantis_eval" / "test-00000-of-00001.parquet", rows, feats)
    return root


def lmms(*args, timeout=1500):
    return run_in(EVAL_PY, ["-m", "eval", "lmms", *args], timeout=timeout)


def test_wrappers_point_the_builtin_tasks_at_local_data(tmp_path):
    """The generated include folder: built-in yaml included, new task names, local parquet, greedy."""
    make_muirbench(tmp_path / "muir")
    make_blink(tmp_path / "blink")
    make_mantis(tmp_path / "mantis")
    out = tmp_path / "out"
    code = f"""
import json, yaml
from pathlib import Path
from eval.lmms.runner import prepare
tasks = prepare(Path({str(out)!r}), {{"muirbench": Path({str(tmp_path / "muir")!r}),
    "blink": Path({str(tmp_path / "blink")!r}), "mantis": Path({str(tmp_path / "mantis")!r})}})
print(json.dumps(tasks))
"""
    tasks = json.loads(run_in(EVAL_PY, ["-c", code]).stdout.strip().splitlines()[-1])
    assert tasks == {
        "muirbench": "migician_muirbench",
        "blink": "migician_blink",
        "mantis": "migician_mantis",
    }
    import yaml

    muir = yaml.safe_load((out / "lmms_tasks" / "migician_muirbench.yaml").read_text())
    assert (
        muir["include"].endswith("lmms_eval/tasks/muirbench/muirbench.yaml")
        and Path(muir["include"]).is_file()
    )
    assert muir["dataset_path"] == "parquet" and muir["dataset_kwargs"]["data_files"]["test"][0].endswith(
        "data/test-00000-of-00001.parquet"
    )
    mantis = yaml.safe_load((out / "lmms_tasks" / "migician_mantis.yaml").read_text())
    assert mantis["generation_kwargs"] == {"max_new_tokens": 64, "temperature": 0, "do_sample": False}
    group = yaml.safe_load((out / "lmms_tasks" / "migician_blink.yaml").read_text())
    assert len(group["task"]) == 14 and group["aggregate_metric_list"][0]["weight_by_size"] is False
    counting = yaml.safe_load((out / "lmms_tasks" / "migician_blink_counting.yaml").read_text())
    assert counting["dataset_kwargs"]["data_files"]["val"][0].endswith("Counting/val-00000-of-00001.parquet")
    # a snapshot without the split's files is refused, naming the folder
    (tmp_path / "empty").mkdir()
    import os
    import subprocess

    bad = subprocess.run(
        [EVAL_PY, "-m", "eval", "lmms", "--model", "m", "--output-dir", str(tmp_path / "o2")]
        + ["--task", f"mantis={tmp_path / 'empty'}"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and f"no test-*.parquet under {tmp_path / 'empty'}" in bad.stderr


@pytest.mark.slow
def test_wrapper_tasks_run_end_to_end_on_vllm_cpu(tmp_path, tiny_model):
    """MuirBench, BLINK and Mantis-Eval through lmms-eval's own vllm model and scorers, with the tiny model."""
    data = {
        "muirbench": make_muirbench(tmp_path / "muir"),
        "blink": make_blink(tmp_path / "blink"),
        "mantis": make_mantis(tmp_path / "mantis"),
    }
    out = tmp_path / "out"
    args = ["--model", str(tiny_model), "--output-dir", str(out), "--dtype", "float32", "--device", "cpu"]
    args += ["--max-model-len", "8192", "--max-new-tokens", "16"]
    args += [x for name, path in data.items() for x in ("--task", f"{name}={path}")]
    proc = lmms(*args)
    results = json.loads((out / "lmms_results.json").read_text())
    assert set(results) == {"muirbench", "blink", "mantis"}
    for name, entry in results.items():
        assert isinstance(entry["value"], float) and 0.0 <= entry["value"] <= 1.0, (name, entry)
    assert "MuirBench: muirbench_score_overall" in proc.stdout
    samples = {p.name.split("_samples_")[1] for p in (out / "lmms").rglob("*_samples_*.jsonl")}
    assert {"migician_muirbench.jsonl", "migician_mantis.jsonl", "migician_blink_counting.jsonl"} <= samples
    # lmms-eval's own results name every blink subtask under the group
    raw = json.loads(sorted((out / "lmms").rglob("*_results.json"))[-1].read_text())
    assert len(raw["group_subtasks"]["migician_blink"]) == 14


def test_mig_bench_in_lmms_eval_scores_as_eval_score(tmp_path):
    """Replayed responses (right boxes in several of the six patterns, wrong ones, no box): lmms-eval's
    aggregate of the MIG-Bench task equals `eval score` on the same responses, task by task."""
    code = f"""
import json
from pathlib import Path
from eval.synthetic import make_synthetic_bench
from eval.benchmarks import get_benchmark
bench_file = make_synthetic_bench(Path({str(tmp_path / "mig")!r}), per_task=3)
bench = get_benchmark("mig-bench").load(bench_file)
logs = []
for k, inst in enumerate(bench.instances):
    x1, y1, x2, y2 = (round(v * 1000) for v in inst.answer)
    resp = [f"<|box_start|>({{x1}},{{y1}}),({{x2}},{{y2}})<|box_end|>", f"[{{x1}}, {{y1}}, {{x2}}, {{y2}}]",
            "(0,0),(3,3)", "no box here"][k % 4]
    logs.append({{"doc_id": k, "resps": [[resp]]}})
Path({str(tmp_path / "logs")!r}).mkdir()
log = {{"args": {{"model": "replay", "model_args": "", "limit": None}}, "model_configs": {{"task": "mig_bench_run"}},
       "time": "1201_1200", "logs": logs}}
Path({str(tmp_path / "logs" / "mig.json")!r}).write_text(json.dumps(log))
print(bench_file)
"""
    bench_file = run_in(EVAL_PY, ["-c", code]).stdout.strip().splitlines()[-1]
    out = tmp_path / "out"
    lmms(
        "--model",
        str(tmp_path / "logs"),
        "--lmms-model",
        "from_log",
        "--output-dir",
        str(out),
        "--task",
        f"mig-bench={bench_file}",
    )
    entry = json.loads((out / "lmms_results.json").read_text())["mig-bench"]
    ours = entry["eval_score"]
    assert 20 < ours["acc@0.5"] < 80  # not a degenerate all-zero or all-right case
    for metric, key in (
        ("acc@0.5", "mig_acc_0.5,none"),
        ("acc@0.3", "mig_acc_0.3,none"),
        ("miou", "mig_miou,none"),
    ):
        assert entry["lmms"][key] == pytest.approx(ours[metric], abs=1e-9), metric
    # and an independent `eval score` of the converted predictions gives the same per-task table
    scored = tmp_path / "scored"
    run_in(
        EVAL_PY,
        [
            "-m",
            "eval",
            "score",
            "--predictions",
            str(out / "mig-bench" / "predictions.jsonl"),
            "--output-dir",
            str(scored),
        ],
    )
    assert (
        json.loads((scored / "metrics.json").read_text())["tasks"]
        == json.loads((out / "mig-bench" / "metrics.json").read_text())["tasks"]
    )
    assert len(json.loads((scored / "metrics.json").read_text())["tasks"]) == 10
