"""`eval suite`: the paper's tables for one model, each benchmark one resumable `eval run`.

Why a thin layer over `run`: every benchmark keeps its own folder (predictions.jsonl, run.json,
results.md), so a suite resumes exactly like a run and each part can be rescored alone; the suite
only decides what has data, runs it, and lays the results out beside the paper's rows (Table 1:
MIG-Bench; Table 8: RefCOCO/+/g, AVE over the eight splits). A part without data is skipped with
the reason, never silently dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from core.atomicio import OutputExistsError, atomic_write_text
from eval.benchmarks import get_benchmark, table2
from eval.benchmarks.refcoco import TABLE8
from eval.report import _fmt, _row  # the report's own cell and row format

log = logging.getLogger(__name__)

# suite part -> the benchmarks it runs through `eval run` (the multi-image part also runs MULTI_IMAGE)
SUITES: dict[str, tuple[str, ...]] = {
    "mig": ("mig-bench",),
    "refcoco": ("refcoco", "refcoco+", "refcocog"),
    "multi-image": ("mibench", "mmiu"),  # own loaders (in neither lmms-eval nor VLMEvalKit)
}
DEFAULT_SUITE = ("mig", "refcoco", "multi-image")
# Paper Table 2 columns that lmms-eval runs here (eval/lmms/wrappers.py), with its own scorers.
MULTI_IMAGE = ("muirbench", "blink", "mantis")
# benchmark -> (the `sources` key of its data, the `eval suite` flag that gives it)
SOURCES: dict[str, tuple[str, str]] = {
    "mig-bench": ("mig-bench", "--mig-bench"),
    **{name: ("refcoco", "--refcoco-root") for name in SUITES["refcoco"]},
    "mibench": ("mibench", "--mibench"),
    "mmiu": ("mmiu", "--mmiu"),
}
SUITE_FILES = ("suite.json", "suite.md")


def parse_suite(text: str | None) -> tuple[str, ...]:
    parts = tuple(p for p in (text or ",".join(DEFAULT_SUITE)).split(",") if p)
    bad = [p for p in parts if p not in SUITES]
    if bad or not parts:
        raise ValueError(f"unknown suite part(s) {bad}; choose from {', '.join(SUITES)}")
    return parts


def _source_problem(name: str, source) -> str | None:
    """Why a benchmark cannot run (no data given, or not where it was said), else None."""
    bench = get_benchmark(name)
    if source is None:
        return f"no data: give {SOURCES[name][1]}"
    path = Path(source)
    if bench.data_kind == "file":
        return None if path.is_file() else f"no data: {path} does not exist"
    if name in SUITES["refcoco"]:  # the refer layout's folder is the benchmark's name (refcoco.py)
        path = path / name
    return None if path.is_dir() else f"no data: {path} does not exist"


def run_suite(base, parts: tuple[str, ...], sources: dict[str, str | None]) -> dict:
    """Run each benchmark of `parts` into base.output_dir/<benchmark>/, then write suite.json and suite.md.

    base: an eval.runner.RunConfig whose bench/benchmark/output_dir are replaced per benchmark.
    Returns the suite summary; its `incomplete` lists the benchmarks a rerun must finish.
    """
    from eval.runner import IncompleteRun, run

    out = Path(base.output_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--output-dir {out} is a file, not a folder")
    summary: dict = {"model": base.label or Path(base.model).name or base.model, "parts": list(parts)}
    results, skipped, incomplete = {}, {}, []
    for part in parts:
        if part == "multi-image":
            results.update(_multi_image(base, sources, skipped))
        for name in SUITES[part]:
            source = sources.get(SOURCES[name][0])
            why = _source_problem(name, source)
            if why:
                skipped[name] = why
                log.warning("suite: %s skipped: %s", name, why)
                continue
            cfg = replace(
                base,
                benchmark=name,
                bench=str(source),
                output_dir=str(out / name),
                tasks=None,
                image_root=base.image_root if name in SUITES["refcoco"] else None,  # the COCO images
            )
            log.info("suite: %s -> %s", name, cfg.output_dir)
            try:
                metrics = run(cfg)
            except IncompleteRun as exc:
                log.warning("suite: %s incomplete: %s", name, exc)
                incomplete.append(name)
                metrics = json.loads((out / name / "metrics.json").read_text(encoding="utf-8"))
            results[name] = metrics
    summary.update(results=results, skipped=skipped, incomplete=incomplete)
    write_suite(out, summary)
    return summary


def _multi_image(base, sources: dict, skipped: dict) -> dict:
    """Table 2's benchmarks that have data, in one lmms-eval run (OUT/lmms/); the others skipped."""
    data = {}
    for name in MULTI_IMAGE:
        path = sources.get(name)
        if path is None:
            skipped[name] = f"no data: give --{name} (a local snapshot folder or parquet file, for lmms-eval)"
        elif not Path(path).exists():
            skipped[name] = f"no data: {path} does not exist"
        else:
            data[name] = Path(path)
    if not data:
        return {}
    lmms_model = {"vllm": "vllm", "openai": "openai"}.get(base.backend)
    if lmms_model is None:
        for name in data:
            skipped[name] = f"lmms-eval has no model class for --backend {base.backend}; use vllm or openai"
        return {}
    from eval.lmms.runner import run_lmms

    opts = dict(base.engine, max_new_tokens=max(base.max_new_tokens or 0, 1024))
    summary = run_lmms(base.model, Path(base.output_dir) / "lmms", data, lmms_model, opts, base.limit)
    return {name: {"lmms": entry} for name, entry in summary.items()}


def table8_row(results: dict) -> tuple[list, float | None]:
    """Our eight RefCOCO cells (None where not run) and their AVE (only when all eight are there)."""
    cells = []
    for name in SUITES["refcoco"]:
        bench = get_benchmark(name)
        tasks = results.get(name, {}).get("tasks", {})
        cells += [tasks.get(t, {}).get("acc@0.5") for t in bench.task_names]
    ave = round(sum(cells) / len(cells), 4) if all(c is not None for c in cells) else None
    return cells, ave


def suite_markdown(summary: dict) -> str:
    results = summary["results"]
    lines = [f"# Evaluation suite: {summary['model']}", ""]
    for name, why in summary["skipped"].items():
        lines.append(f"- skipped **{name}**: {why}")
    for name in summary["incomplete"]:
        lines.append(f"- **{name} is incomplete**: rerun the same command to finish it")
    if "mig-bench" in results:
        bench = get_benchmark("mig-bench")
        m = results["mig-bench"]
        header = ["Model", *[t.short for t in bench.tasks], "AVE"]
        lines += ["", "## MIG-Bench Acc@0.5 (paper Table 1)", "", _row(header), _row(["---"] * len(header))]
        ours = [m["tasks"].get(t, {}).get("acc@0.5") for t in bench.task_names]
        lines.append(
            _row([f"**{summary['model']}** (this run)", *map(_fmt, ours), _fmt(m["average"]["acc@0.5"])])
        )
        for ref in bench.references:
            values = [ref.values.get(c) for c in (*bench.task_names, "AVE")]
            lines.append(_row([f"{ref.name} (paper)", *map(_fmt, values)]))
    if any(n in results for n in SUITES["refcoco"]):
        cols = [
            f"{get_benchmark(n).title} {t}" for n in SUITES["refcoco"] for t in get_benchmark(n).task_names
        ]
        header = ["Model", *cols, "AVE"]
        lines += ["", "## RefCOCO / RefCOCO+ / RefCOCOg Acc@0.5 (paper Table 8)", ""]
        lines += [_row(header), _row(["---"] * len(header))]
        cells, ave = table8_row(results)
        lines.append(_row([f"**{summary['model']}** (this run)", *map(_fmt, cells), _fmt(ave)]))
        for ref in TABLE8:
            lines.append(_row([f"{ref.name} (paper)", *map(_fmt, ref.values.values())]))
        if ave is None:
            lines.append("")
            lines.append("AVE is given only when all eight splits were run (it is over the eight).")
    if any(n in results for n in (*MULTI_IMAGE, *SUITES["multi-image"])):
        lines += _table2(summary)
    lines += [
        "",
        "Reference rows are the paper's, not measured here; each benchmark's folder has its results.md.",
    ]
    return "\n".join(lines) + "\n"


def table2_row(results: dict) -> tuple[list, float | None]:
    """Our five Table 2 cells (None where not run) and their AVE (only when all five are there)."""
    cells = []
    for column in table2.COLUMNS:
        if column in SUITES["multi-image"]:  # eval/choice.py's accuracy, already in %
            cells.append(results.get(column, {}).get("average", {}).get("accuracy"))
            continue
        value = results.get(column, {}).get("lmms", {}).get("value")
        cells.append(None if value is None else round(100.0 * value, 4))
    ave = round(sum(cells) / len(cells), 4) if all(v is not None for v in cells) else None
    return cells, ave


def _table2(summary: dict) -> list[str]:
    header = ["Model", *table2.TITLES]
    lines = ["", "## Multi-image understanding, accuracy % (paper Table 2)", ""]
    lines += [_row(header), _row(["---"] * len(header))]
    cells, ave = table2_row(summary["results"])
    lines.append(_row([f"**{summary['model']}** (this run)", *map(_fmt, cells), _fmt(ave)]))
    for name, values in table2.ROWS:
        lines.append(_row([f"{name} (paper)", *map(_fmt, values)]))
    lines += ["", "- MuirBench, BLINK and Mantis-Eval: lmms-eval 0.7.3's own tasks and scorers."]
    lines.append(
        "- MIBench and MMIU: this project's loaders and eval/choice.py's option matching, the unweighted "
        "mean over their sub-tasks (each one's results.md states its protocol)."
    )
    for name in MULTI_IMAGE:
        entry = summary["results"].get(name, {}).get("lmms")
        if entry and entry.get("note"):
            lines.append(f"- {entry['title']}: {entry['note']}")
    lines.append("- AVE is given only when all five columns were run.")
    return lines


def write_suite(out_dir: Path, summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "suite.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out_dir / "suite.md", suite_markdown(summary))


def expand_runs(run_dirs) -> list[Path]:
    """`eval compare` folders: a suite folder stands for its benchmarks' folders."""
    out = []
    for d in map(Path, run_dirs):
        if (d / "suite.json").is_file() and not (d / "metrics.json").is_file():
            subs = [
                d / name
                for parts in SUITES.values()
                for name in parts
                if (d / name / "metrics.json").is_file()
            ]
            out += subs or [d]
        else:
            out.append(d)
    return out
