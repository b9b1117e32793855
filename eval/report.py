"""Reports: metrics.json, metrics.csv, results.md (the paper's table layout), radar.png, outcomes.png,
compare.

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

from core.atomicio import atomic_file, atomic_write_text
from eval.benchmark import Benchmark
from eval.benchmarks import DEFAULT_BENCHMARK, get_benchmark
from eval.scoring import METRIC_KEYS

OUTPUT_FILES = ("metrics.json", "metrics.csv", "results.md", "radar.png", "outcomes.png", "scoring.json")
# What each outcome is called in results.md and drawn in, in eval.outcomes.OUTCOMES order.
OUTCOME_LABELS = {"hit": "hit", "miss": "miss", "wrong_image": "wrong image", "unparsed": "unparsed"}
OUTCOME_COLOURS = {"hit": "#2e7d32", "miss": "#ef6c00", "wrong_image": "#6a1b9a", "unparsed": "#9e9e9e"}


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
        ("pixel_budget", "Image budget"),
        ("prompt_layout", "Prompt layout"),
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
    lines += outcomes_section(metrics, bench)
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
    rule = {
        "think": "MIRG-RL's think/answer format rule",
        "think-json-ids": "MG-Thinker's think/answer/JSON-ids rule",
    }.get(answer_format, "a box parses")
    lines = ["", f"## Answers (well-formed: {rule}; image index: where the answer names an image)", ""]
    lines.append(_row(["Task", "n", "well-formed %", "naming an image", "image-index acc %"]))
    lines.append(_row(["---"] * 5))
    for t in present:
        m = metrics["tasks"][t.name]
        lines.append(_row([t.short, m["n"], _fmt(m["well_formed"]), m["image_named"], _fmt(m["image_acc"])]))
    return lines


def outcomes_section(metrics: dict, bench: Benchmark) -> list[str]:
    """results.md lines for the outcome taxonomy (eval.outcomes), the chart and the viewer's link."""
    present = [t for t in bench.tasks if "outcomes" in metrics["tasks"].get(t.name, {})]
    if not present:
        return []
    lines = [
        "",
        "## Outcomes (hit: IoU >= 0.5; miss: a box, IoU < 0.5; wrong image: the answer names another image; "
        "unparsed: no box read)",
        "",
        _row(["Task", "n", *OUTCOME_LABELS.values()]),
        _row(["---"] * (2 + len(OUTCOME_LABELS))),
    ]
    for t in present:
        m = metrics["tasks"][t.name]
        lines.append(_row([t.short, m["n"], *(m["outcomes"][k] for k in OUTCOME_LABELS)]))
    lines += [
        "",
        "![Outcomes per task](outcomes.png)",
        "",
        "Every instance with its images and boxes: [view/index.html](view/index.html) "
        "(written by `python -m eval view` on this folder).",
    ]
    return lines


def outcomes_png(path: Path, metrics: dict, label: str, bench: Benchmark | None = None) -> None:
    """One stacked bar per present task: the share of each outcome, its count written in the segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = bench or _benchmark_of(metrics)
    present = [t for t in bench.tasks if "outcomes" in metrics["tasks"].get(t.name, {})]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(present) + 1.6))
    rows = list(range(len(present)))[::-1]  # the first task on top
    left = [0.0] * len(present)
    for key, name in OUTCOME_LABELS.items():
        counts = [metrics["tasks"][t.name]["outcomes"][key] for t in present]
        shares = [
            100.0 * c / max(1, metrics["tasks"][t.name]["n"]) for c, t in zip(counts, present, strict=True)
        ]
        ax.barh(rows, shares, left=left, color=OUTCOME_COLOURS[key], label=name)
        for row, x, w, c in zip(rows, left, shares, counts, strict=True):
            if w >= 6:
                ax.text(x + w / 2, row, str(c), ha="center", va="center", color="white", fontsize=7)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_yticks(rows)
    ax.set_yticklabels([t.short for t in present])
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of instances (counts in the bars)")
    ax.set_title(f"{bench.title} outcomes: {label}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


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
    """Write the report files (OUTPUT_FILES) atomically into out_dir.

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
    if any("outcomes" in m for m in metrics["tasks"].values()):
        outcomes_png(out / "outcomes.png", metrics, str(context.get("model", "this run")), bench)
