"""`python -m eval compare RUN [RUN ...]`: scored runs side by side, one metric, one table.

Why its own module: it reads folders of finished runs (a suite folder stands for its benchmarks'), so it
sits above the runner and the suite; report.py, which every run writes through, stays below them.
"""

from __future__ import annotations

from pathlib import Path

from core.jsonfile import JSONFileError, read_json
from eval.benchmarks import DEFAULT_BENCHMARK, get_benchmark
from eval.report import _fmt, _row
from eval.scoring import METRIC_KEYS
from eval.suite import expand_runs


def _read_metrics(run_dir) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a scored eval folder?")
    try:
        m = read_json(path, dict, "a metrics.json written by `python -m eval`")
    except JSONFileError as exc:
        raise ValueError(str(exc)) from None
    try:
        if not isinstance(m.get("tasks"), dict) or not isinstance(m.get("average"), dict):
            raise KeyError("tasks/average")
        get_benchmark(m.get("benchmark", DEFAULT_BENCHMARK))
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a metrics.json written by `python -m eval`: {exc}") from exc
    return m


def _metric(value, where: str):
    """A metric cell: a number or None (not measured); ValueError naming the file and key otherwise."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise ValueError(f"{where} is {type(value).__name__} {str(value)[:40]!r}, not a number")


def compare(run_dirs, metric: str = "acc@0.5") -> str:
    """Markdown tables: one per benchmark present, one row per run folder (its metrics.json).

    A suite folder (suite.json) stands for its benchmarks' folders, its rows named after the suite."""
    if metric not in METRIC_KEYS[1:]:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRIC_KEYS[1:]}")
    by_bench: dict[str, list[tuple[str, dict]]] = {}
    for d in expand_runs(run_dirs):
        m = _read_metrics(d)
        d = Path(d).resolve()
        name = d.parent.name if (d.parent / "suite.json").is_file() else d.name  # a suite's part: its model
        by_bench.setdefault(m.get("benchmark", DEFAULT_BENCHMARK), []).append((name, m))
    blocks = []
    for name, runs in by_bench.items():
        bench = get_benchmark(name)
        # a choice benchmark has one metric, accuracy; a benchmark whose tasks are the data's (MMIU's
        # 52+) is shown by its average alone
        key = "accuracy" if bench.is_choice else metric
        columns = () if bench.open_tasks else bench.tasks
        header = ["Run", *[t.short for t in columns], "AVE", "tasks"]
        lines = [f"{bench.title} {key} (%)", "", _row(header), _row(["---"] * len(header))]
        for run_name, m in runs:
            where = f"{run_name}/metrics.json"
            try:
                cells = [
                    _metric(m["tasks"].get(t.name, {}).get(key), f"{where} tasks.{t.name}.{key}")
                    for t in columns
                ]
                ave = _metric(m["average"][key], f"{where} average.{key}")
            except (KeyError, AttributeError, TypeError) as exc:
                raise ValueError(f"{where} lacks {key}: {exc}") from exc
            lines.append(_row([run_name, *map(_fmt, cells), _fmt(ave), len(m["tasks"])]))
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
