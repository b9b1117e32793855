"""The lmms-eval task table and the include folder a run reads (`--include_path OUT/lmms_tasks`).

Why generated per run: a wrapper must name the built-in yaml it includes (inside lmms-eval's
installed package) and the user's local data files; both are only known on the machine that runs
it. Each wrapper is a few lines: `include:` the built-in yaml, a new task name, the local parquet
files, greedy decoding. The built-in yaml's own `!function utils.*` hooks (prompt, parse, score)
resolve inside lmms-eval as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core.atomicio import atomic_write_text

TASKS_DIR = Path(__file__).resolve().parent / "tasks"  # the shipped MIG-Bench task
GREEDY = {"temperature": 0, "do_sample": False}


@dataclass(frozen=True)
class Wrapper:
    """One lmms-eval benchmark run from local data under a project task name."""

    name: str  # our name (`--task NAME=PATH`)
    title: str
    task: str  # the wrapper's lmms-eval task (or group) name
    builtin: tuple[str, ...]  # built-in yaml(s) under lmms_eval/tasks/, one per (sub)task
    split: str  # the split the built-in reads
    metric: str  # the result key lmms-eval reports (metric,filter)
    max_new_tokens: int
    subtask_data: dict[str, str] = field(default_factory=dict)  # built-in yaml -> data folder (BLINK)
    note: str = ""


_BLINK_SUBTASKS = {
    "art_style": "Art_Style",
    "counting": "Counting",
    "forensic_detection": "Forensic_Detection",
    "functional_correspondence": "Functional_Correspondence",
    "iq_test": "IQ_Test",
    "jigsaw": "Jigsaw",
    "multi_view_reasoning": "Multi-view_Reasoning",
    "object_localization": "Object_Localization",
    "relative_depth": "Relative_Depth",
    "relative_reflectance": "Relative_Reflectance",
    "semantic_correspondence": "Semantic_Correspondence",
    "spatial_relation": "Spatial_Relation",
    "visual_correspondence": "Visual_Correspondence",
    "visual_similarity": "Visual_Similarity",
}

WRAPPERS: dict[str, Wrapper] = {
    "muirbench": Wrapper(
        "muirbench",
        "MuirBench",
        "migician_muirbench",
        ("muirbench/muirbench.yaml",),
        "test",
        "muirbench_score_overall,flexible-extract",
        16,
    ),
    "blink": Wrapper(
        "blink",
        "BLINK (val)",
        "migician_blink",
        tuple(f"blink/blink_{k}.yaml" for k in _BLINK_SUBTASKS),
        "val",
        "blink_acc,none",
        1024,
        subtask_data={f"blink/blink_{k}.yaml": v for k, v in _BLINK_SUBTASKS.items()},
        note="the 14 subtasks' unweighted mean, as lmms-eval's blink group computes it",
    ),
    "mantis": Wrapper(
        "mantis",
        "Mantis-Eval",
        "migician_mantis",
        ("mantis/mantis.yaml",),
        "test",
        "mantis_score,none",
        64,
        note="greedy (lmms-eval's own yaml samples at temperature 0.2)",
    ),
}


def builtin_dir() -> Path:
    """lmms-eval's installed task folder (ImportError when lmms-eval is not installed)."""
    import lmms_eval.tasks

    return Path(lmms_eval.tasks.__file__).resolve().parent


def parquet_files(root: Path, split: str) -> list[str]:
    """The split's parquet files of a local snapshot (`**/SPLIT-*.parquet`), or the one file given."""
    root = Path(root)
    if root.is_file():
        return [str(root.resolve())]
    files = sorted(str(p.resolve()) for p in root.rglob(f"{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {split}-*.parquet under {root} (a local snapshot of the dataset)")
    return files


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def write_wrapper(out: Path, wrapper: Wrapper, data: Path) -> str:
    """Write the wrapper yaml(s) for `wrapper` over local `data` into `out`; returns the task to run."""
    base = builtin_dir()
    names = []
    for rel in wrapper.builtin:
        src = base / rel
        if not src.is_file():
            raise FileNotFoundError(f"lmms-eval has no {rel} (is lmms-eval 0.7.3 installed?)")
        root = Path(data) / wrapper.subtask_data[rel] if wrapper.subtask_data else Path(data)
        task = (
            wrapper.task
            if len(wrapper.builtin) == 1
            else f"{wrapper.task}_{Path(rel).stem.removeprefix('blink_')}"
        )
        spec = {
            "include": str(src),
            "task": task,
            "tag": f"{wrapper.task}_subtasks",
            "dataset_path": "parquet",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {wrapper.split: parquet_files(root, wrapper.split)}},
            "generation_kwargs": {"max_new_tokens": wrapper.max_new_tokens, **GREEDY},
        }
        atomic_write_text(out / f"{task}.yaml", _yaml(spec))
        names.append(task)
    if len(names) > 1:
        group = {
            "group": wrapper.task,
            "task": names,
            "aggregate_metric_list": [{"metric": wrapper.metric.split(",")[0], "weight_by_size": False}],
        }
        atomic_write_text(out / f"{wrapper.task}.yaml", _yaml(group))
    return wrapper.task


def write_mig_bench(out: Path, bench_file: Path, answer_format: str = "official", image_root=None) -> str:
    """The MIG-Bench task over `bench_file`: its docs (absolute image paths, 0-1 answers) and a wrapper.

    Instances the loader rejects are left out of the docs; they are listed in mig_bench_problems.json
    (`eval run` would score them as misses).
    """
    from eval.benchmarks import get_benchmark

    bench_def = get_benchmark("mig-bench")
    bench = bench_def.load(bench_file, image_root)
    docs = [
        {
            "index": i.index,
            "task": i.task,
            "images": i.images,
            "image_paths": i.image_paths,
            "question": i.question,
            "answer": i.answer,
            "need_format": i.need_format,
            "target_image": bench_def.target_image(i),
            "answer_format": answer_format,
        }
        for i in bench.instances
    ]
    atomic_write_text(out / "mig_bench_docs.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    atomic_write_text(
        out / "mig_bench_problems.json", json.dumps([p.as_dict() for p in bench.problems], indent=1) + "\n"
    )
    spec = {
        "include": str(TASKS_DIR / "mig_bench.yaml"),
        "task": "mig_bench_run",
        "dataset_kwargs": {"data_files": {"test": str((out / "mig_bench_docs.jsonl").resolve())}},
    }
    atomic_write_text(out / "mig_bench_run.yaml", _yaml(spec))
    return "mig_bench_run"
