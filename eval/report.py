"""Reports: metrics.json, metrics.csv, results.md (the paper's table layout), radar.png, compare.

Why separate from scoring: the numbers are computed once (Benchmark.aggregate);
this module only lays them out, in the columns of the run's benchmark. The
paper's rows are printed beside ours as references, labelled as such, looked
up by column name and never mixed with measured values.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from atomicio import atomic_file, atomic_write_text
from eval.benchmark import Benchmark
from eval.benchmarks import DEFAULT_BENCHMARK, get_benchmark
from eval.scoring import METRIC_KEYS

OUTPUT_FILES = ("metrics.json", "metrics.csv", "results.md", "radar.png", "scoring.json")


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _benchmark_of(metrics: dict) -> Benchmark:
    return get_benchmark(metrics.get("benchmark", DEFAULT_BENCHMARK))


def metrics_csv(metrics: dict, bench: Benchmark | None = None) -> str:
    bench = bench or _benchmark_of(metrics)
    if bench.is_choice:
        return choice_csv(metrics)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scope", "name", "short", *METRIC_KEYS])
    for name, m in metrics["tasks"].items():
        writer.writerow(["task", name, bench.by_name[name].short, *[m[k] for k in METRIC_KEYS]])
    for name, m in metrics["groups"].items():
        writer.writerow(["group", name, name, *[m[k] for k in METRIC_KEYS]])
    writer.writerow(["average", "average", "AVE", *[metrics["average"][k] for k in METRIC_KEYS]])
    return buf.getvalue()


def results_markdown(metrics: dict, context: dict, bench: Benchmark | None = None) -> str:
    bench = bench or _benchmark_of(metrics)
    if bench.is_choice:
        return choice_markdown(metrics, context, bench)
    present = [t for t in bench.tasks if t.name in metrics["tasks"]]
    header = ["Model", *[t.short for t in bench.tasks], "AVE"]
    lines = [f"# {bench.title} results: {context.get('model', 'model')}", ""]
    for key, label in (
        ("backend", "Backend"),
        ("mode", "Mode"),
        ("format_suffix", "Format suffix"),
        ("convention" if context.get("convention") else "coords", "Coordinate convention"),
        ("answer_format", "Answer format"),
    ):
        if context.get(key) is not None:
            lines.append(f"- {label}: `{context[key]}`")
    if bench.name == "mig-bench":
        rescale = context.get("rescale", "none")
        lines.append(
            "- Migician rescale (y1*1.05, y2*1.10, capped at 0.999): "
            + ("**on** (as the paper's script does for Migician)" if rescale == "migician" else "off")
        )
    lines += [f"- {note}" for note in bench.notes]
    lines.append(
        f"- Instances scored: {metrics['average']['n']} (skipped and scored as misses: "
        f"{len(context.get('skipped', []))})"
    )
    lines += _incomplete(context)
    if len(present) < len(bench.tasks):
        missing = [t.short for t in bench.tasks if t.name not in metrics["tasks"]]
        lines.append(
            f"- Only {len(present)} of {len(bench.tasks)} tasks are present; group values and AVE are "
            f"the unweighted means over the present tasks (missing: {', '.join(missing)})"
        )
    lines += ["", f"## Acc@0.5 in the layout of {bench.reference_table or 'the paper'}", ""]
    lines.append(_row(header))
    lines.append(_row(["---"] * len(header)))
    ours = [metrics["tasks"].get(t.name, {}).get("acc@0.5") for t in bench.tasks]
    lines.append(
        _row(
            [
                f"**{context.get('model', 'this run')}** (this run)",
                *map(_fmt, ours),
                _fmt(metrics["average"]["acc@0.5"]),
            ]
        )
    )
    if bench.references:
        lines.append(
            _row(
                [
                    f"*Reference rows below: {bench.reference_table}, not measured here*",
                    *[""] * (len(header) - 1),
                ]
            )
        )
    columns = [*(t.name for t in bench.tasks), "AVE"]
    for ref in bench.references:
        lines.append(
            _row([f"{ref.name} (paper, {ref.section})", *(_fmt(ref.values.get(c)) for c in columns)])
        )
    lines += ["", "## All metrics (%, IoU thresholds inclusive)", ""]
    lines.append(_row(["Scope", "n", "Acc@0.5", "Acc@0.3", "Acc@0.7", "mIoU"]))
    lines.append(_row(["---"] * 6))
    for t in present:
        m = metrics["tasks"][t.name]
        label = t.short if t.short == t.name else f"{t.short} ({t.name})"
        lines.append(_row([label, m["n"], *[_fmt(m[k]) for k in METRIC_KEYS[1:]]]))
    for g, m in metrics["groups"].items():
        lines.append(_row([f"group: {g}", m["n"], *[_fmt(m[k]) for k in METRIC_KEYS[1:]]]))
    m = metrics["average"]
    lines.append(
        _row(["**average (unweighted over tasks)**", m["n"], *[_fmt(m[k]) for k in METRIC_KEYS[1:]]])
    )
    lines += answers_section(metrics, context.get("answer_format", "official"), bench)
    lines += _skipped_and_notes(context)
    return "\n".join(lines) + "\n"


def _incomplete(context: dict) -> list[str]:
    if not context.get("incomplete"):
        return []
    return [
        f"- **Incomplete**: {context['incomplete']} instance(s) not generated yet; "
        "rerun the same command to finish them"
    ]


def _skipped_and_notes(context: dict) -> list[str]:
    """results.md's closing sections: the skipped instances (first 100) and the notes."""
    lines = []
    skipped = context.get("skipped", [])
    if skipped:
        lines += ["", f"## Skipped instances ({len(skipped)}, each scored as a miss)", ""]
        for s in skipped[:100]:
            lines.append(f"- instance {s['index']} ({s.get('task') or 'unknown task'}): {s['reason']}")
        if len(skipped) > 100:
            lines.append(f"- ... {len(skipped) - 100} more in scoring.json")
    notes = context.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes[:100]]
    return lines


CHOICE_KEYS = ("n", "accuracy", "unanswered")


def choice_csv(metrics: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scope", "name", *CHOICE_KEYS])
    for scope, items in (("task", metrics["tasks"]), ("group", metrics["groups"])):
        for name, m in items.items():
            writer.writerow([scope, name, *[m.get(k) for k in CHOICE_KEYS]])
    a = metrics["average"]
    writer.writerow(["average", "average", *[a.get(k) for k in CHOICE_KEYS]])
    writer.writerow(["average", "micro", a["n"], a.get("micro"), a.get("unanswered")])
    return buf.getvalue()


def choice_markdown(metrics: dict, context: dict, bench: Benchmark) -> str:
    """results.md of a multiple-choice benchmark: accuracy per task, the average, the paper's rows."""
    a = metrics["average"]
    lines = [f"# {bench.title} results: {context.get('model', 'model')}", ""]
    if context.get("backend"):
        lines.append(f"- Backend: `{context['backend']}`")
    lines += [f"- {note}" for note in bench.notes]
    lines.append(
        f"- Questions scored: {a['n']} (skipped and scored as misses: {len(context.get('skipped', []))}; "
        f"answers naming no option: {a.get('unanswered', 0)})"
    )
    lines += _incomplete(context)
    header = ["Model", "accuracy % (mean over tasks)", "accuracy % (all questions)", "tasks"]
    lines += ["", f"## Accuracy beside {bench.reference_table or 'the paper'}", "", _row(header)]
    lines.append(_row(["---"] * len(header)))
    ours = [_fmt(a.get("accuracy")), _fmt(a.get("micro")), len(metrics["tasks"])]
    lines.append(_row([f"**{context.get('model', 'this run')}** (this run)", *ours]))
    for ref in bench.references:
        lines.append(_row([f"{ref.name} (paper, {ref.section})", _fmt(ref.values.get("AVE")), "", ""]))
    lines += ["", "## Per task", "", _row(["Task", "n", "accuracy %", "unanswered"]), _row(["---"] * 4)]
    shorts = {t.name: t.short for t in bench.tasks}
    for name, m in metrics["tasks"].items():
        label = name if shorts.get(name, name) == name else f"{shorts[name]} ({name})"
        lines.append(_row([label, m["n"], _fmt(m["accuracy"]), m.get("unanswered", 0)]))
    for g, m in metrics["groups"].items():
        lines.append(_row([f"group: {g}", m["n"], _fmt(m["accuracy"]), ""]))
    lines += _skipped_and_notes(context)
    return "\n".join(lines) + "\n"


def answers_section(metrics: dict, answer_format: str, bench: Benchmark | None = None) -> list[str]:
    """results.md lines for the answer diagnostics (well-formed share, image-index accuracy), if any."""
    bench = bench or _benchmark_of(metrics)
    present = [t for t in bench.tasks if "well_formed" in metrics["tasks"].get(t.name, {})]
    if not present:
        return []
    rule = "MIRG-RL's think/answer format rule" if answer_format == "think" else "a box parses"
    lines = ["", f"## Answers (well-formed: {rule}; image index: where the answer names an image)", ""]
    lines.append(_row(["Task", "n", "well-formed %", "naming an image", "image-index acc %"]))
    lines.append(_row(["---"] * 5))
    for t in present:
        m = metrics["tasks"][t.name]
        lines.append(_row([t.short, m["n"], _fmt(m["well_formed"]), m["image_named"], _fmt(m["image_acc"])]))
    return lines


def radar_png(path: Path, metrics: dict, label: str, bench: Benchmark | None = None) -> None:
    """Acc@0.5 per present task, with the benchmark's radar reference rows dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import math

    import matplotlib.pyplot as plt

    bench = bench or _benchmark_of(metrics)
    present = [t for t in bench.tasks if t.name in metrics["tasks"]]
    angles = [2 * math.pi * k / len(present) for k in range(len(present))]
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="polar")

    def draw(values, style, lab):
        ax.plot(angles + angles[:1], values + values[:1], style, label=lab, linewidth=1.5)

    for ref_name, style in zip(bench.radar_references, ("--", ":", "-."), strict=False):
        ref = bench.reference(ref_name)
        if ref is not None and all(t.name in ref.values for t in present):
            draw([ref.values[t.name] for t in present], style, f"{ref.name} (paper)")
    draw([metrics["tasks"][t.name]["acc@0.5"] for t in present], "-o", label)
    ax.set_xticks(angles)
    ax.set_xticklabels([t.short for t in present])
    ax.set_ylim(0, 100)
    ax.set_title(f"{bench.title} Acc@0.5 (%)")
    ax.legend(loc="lower left", bbox_to_anchor=(-0.1, -0.15), fontsize=8)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_reports(out_dir, metrics: dict, context: dict, bench: Benchmark | None = None) -> None:
    """Write the five report files atomically into out_dir.

    metrics.json names its benchmark unless it is MIG-Bench (so a MIG-Bench file keeps its keys)."""
    bench = bench or _benchmark_of(metrics)
    if bench.name != DEFAULT_BENCHMARK:
        metrics = dict(metrics, benchmark=bench.name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a bare NaN is not JSON; scoring never produces one, and this keeps it so.
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "metrics.csv", metrics_csv(metrics, bench))
    atomic_write_text(out / "results.md", results_markdown(metrics, context, bench))
    atomic_write_text(out / "scoring.json", json.dumps(context, indent=2, default=str) + "\n")
    if metrics["tasks"] and not bench.is_choice:
        radar_png(out / "radar.png", metrics, str(context.get("model", "this run")), bench)


def _read_metrics(run_dir) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a scored eval folder?")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(m.get("tasks"), dict) or not isinstance(m.get("average"), dict):
            raise KeyError("tasks/average")
        get_benchmark(m.get("benchmark", DEFAULT_BENCHMARK))
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a metrics.json written by `python -m eval`: {exc}") from exc
    return m


def compare(run_dirs, metric: str = "acc@0.5") -> str:
    """Markdown tables: one per benchmark present, one row per run folder (its metrics.json).

    A suite folder (suite.json) stands for its benchmarks' folders, its rows named after the suite."""
    if metric not in METRIC_KEYS[1:]:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRIC_KEYS[1:]}")
    from eval.suite import expand_runs

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
            try:
                cells = [m["tasks"].get(t.name, {}).get(key) for t in columns]
                ave = m["average"][key]
            except (KeyError, AttributeError, TypeError) as exc:
                raise ValueError(f"{run_name}/metrics.json lacks {key}: {exc}") from exc
            lines.append(_row([run_name, *map(_fmt, cells), _fmt(ave), len(m["tasks"])]))
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
