"""What a benchmark is: its tasks, its loader, its prompt and target-image rules, its reference rows.

Why an object, in the spirit of lmms-eval's task yaml + utils: generation, the resumable run store,
the backends, box scoring and the report layout are shared, and everything that differs between
MIG-Bench and RefCOCO (or the next benchmark) sits in one `Benchmark` value in one module of
`eval/benchmarks/`, registered by one entry in its table. Reference rows are keyed by column name,
never by position, so a reordered or partial task list cannot shift a paper's number into the
wrong column.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from eval.scoring import METRIC_KEYS


class BenchError(ValueError):
    """The benchmark's data as a whole cannot be used (nothing is evaluated)."""


@dataclass(frozen=True)
class Task:
    name: str  # the task value in the data (MIG-Bench's `task`, RefCOCO's split)
    short: str  # column header of the paper's table
    group: str  # a group of tasks averaged together in the report


@dataclass(frozen=True)
class Reference:
    """One published row: values by task name, plus "AVE"; printed beside ours, never mixed with them."""

    name: str
    section: str
    values: dict[str, float]


@dataclass
class Instance:
    index: int  # position in the benchmark's data, 0-based; the key of predictions.jsonl
    task: str
    images: list[str]  # as written in the data
    image_paths: list[str]  # resolved against the image root
    question: str
    answer: list[float]  # 0-1, relative to the target image
    additional_info: str = ""
    need_format: bool = True
    options: list[str] = field(default_factory=list)  # a choice benchmark's options, in order
    correct: int | None = None  # and the 0-based right one (`answer` is then empty)


@dataclass
class Problem:
    index: int
    task: str | None
    reason: str

    def as_dict(self) -> dict:
        return {"index": self.index, "task": self.task, "reason": self.reason}


@dataclass
class Bench:
    """A loaded benchmark: the instances to run and the problems found (each later scored as a miss)."""

    path: Path
    image_root: Path
    sha256: str
    answer_scale: str
    total: int  # instances in the data
    instances: list[Instance] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def max_images(self) -> int:
        return max((len(i.image_paths) for i in self.instances), default=1)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's configuration; see eval/benchmarks/mig_bench.py for the first instance.

    load(source, image_root, task_names, limit, answer_scale, check_images) -> Bench, where source is
    the benchmark's data (a file or a root folder, `data_kind` says which) and task_names selects tasks
    (MIG-Bench tasks, RefCOCO splits). target_image(instance) -> the 0-based image the answer box lies
    in, or None when it cannot be told.
    """

    name: str  # `eval run --benchmark NAME`
    title: str  # in report headings
    tasks: tuple[Task, ...]  # in the paper's column order
    groups: tuple[str, ...]
    load: Callable[..., Bench]
    target_image: Callable[[Instance], int | None]
    references: tuple[Reference, ...] = ()
    reference_table: str = ""  # where the reference rows come from ("the paper's Table 1")
    radar_references: tuple[str, ...] = ()  # reference rows drawn on the radar plot
    modes: tuple[str, ...] = ("direct",)  # generation modes it defines prompts for
    default_suffix: str = "script"  # eval.prompts.FORMAT_SUFFIXES name
    data_kind: str = "file"  # "file" (--bench FILE) or "root" (--data-root DIR)
    notes: tuple[str, ...] = ()  # protocol statements for results.md
    kind: str = "grounding"  # or "choice": options and accuracy (eval/choice.py), no boxes
    letters: bool = False  # choice: the options are lettered, so a lone letter answers
    open_tasks: bool = False  # choice: tasks outside `tasks` are the data's own and kept (MMIU)

    @property
    def is_choice(self) -> bool:
        return self.kind == "choice"

    @property
    def headline(self) -> str:
        """The metric a table of this benchmark shows: Acc@0.5 for boxes, accuracy for choices."""
        return "accuracy" if self.is_choice else "acc@0.5"

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def by_name(self) -> dict[str, Task]:
        return {t.name: t for t in self.tasks}

    def check_tasks(self, names) -> None:
        bad = [] if self.open_tasks else sorted(set(names or ()) - set(self.task_names))
        if bad:
            raise BenchError(f"unknown task(s) {bad}; {self.title} tasks are {', '.join(self.task_names)}")

    def reference(self, name: str) -> Reference | None:
        return next((r for r in self.references if r.name == name), None)

    def aggregate(self, records: Iterable[dict]) -> dict:
        """metrics.json: per task (column order, present tasks only), per group, and the average.

        Each record needs `task` and `iou` (a skipped instance counts with IoU 0); a choice benchmark's
        records need `hit` and `picked` instead (eval/choice.py). Groups and the average are unweighted
        means over the tasks present.
        """
        if self.is_choice:
            from eval.choice import accuracy

            metrics = accuracy(records, self.task_names, self.open_tasks)
            tasks, groups = metrics["tasks"], {}
            for g in self.groups:
                members = [tasks[t.name] for t in self.tasks if t.group == g and t.name in tasks]
                if members:
                    mean = round(sum(m["accuracy"] for m in members) / len(members), 4)
                    groups[g] = {"n": sum(m["n"] for m in members), "accuracy": mean}
            return {"tasks": tasks, "groups": groups, "average": metrics["average"]}
        by_task: dict[str, list[float]] = {}
        for rec in records:
            by_task.setdefault(rec["task"], []).append(float(rec.get("iou") or 0.0))
        unknown = sorted(set(by_task) - set(self.task_names), key=str)
        if unknown:
            raise ValueError(f"records name tasks that are not {self.title} tasks: {unknown}")
        task_metrics = {t: summary(by_task[t]) for t in self.task_names if t in by_task}
        groups = {
            g: mean_of([task_metrics[t.name] for t in self.tasks if t.group == g and t.name in task_metrics])
            for g in self.groups
        }
        return {"tasks": task_metrics, "groups": groups, "average": mean_of(list(task_metrics.values()))}


def summary(ious: list[float]) -> dict:
    """Acc at each threshold (inclusive) and mean IoU, in %, 4 decimals."""
    from eval.scoring import THRESHOLDS

    n = len(ious)
    if n == 0:
        return dict.fromkeys(METRIC_KEYS) | {"n": 0}
    out = {"n": n}
    for t in THRESHOLDS:
        out[f"acc@{t}"] = round(100.0 * sum(1 for v in ious if v >= t) / n, 4)
    out["miou"] = round(100.0 * sum(ious) / n, 4)
    return {k: out[k] for k in METRIC_KEYS}


def mean_of(task_metrics: list[dict]) -> dict:
    """Unweighted mean of task metrics (n is the total)."""
    if not task_metrics:
        return dict.fromkeys(METRIC_KEYS) | {"n": 0}
    out = {"n": sum(m["n"] for m in task_metrics)}
    for key in METRIC_KEYS[1:]:
        out[key] = round(sum(m[key] for m in task_metrics) / len(task_metrics), 4)
    return out


def sha256_of(paths: Iterable[Path]) -> str:
    """One digest over the files that make up a benchmark's data (name and bytes, in the given order)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode() + b"\n")
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def text_problem(text: str) -> str | None:
    """Why a string cannot reach a model or a file: a NUL byte or a lone surrogate (None: fine)."""
    if "\x00" in text:
        return "holds a NUL byte"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"holds {text[err.start]!r}, a lone surrogate that is not valid Unicode"
    return None
