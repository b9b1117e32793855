"""Reports: metrics.json, metrics.csv, results.md (Table 1 layout), radar.png, compare.

Why separate from scoring: the numbers are computed once (scoring.aggregate);
this module only lays them out. The paper's Table 1 rows are printed beside
ours as references, labelled as such, never mixed with measured values.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from atomicio import atomic_file, atomic_write_text
from eval import tasks
from eval.scoring import METRIC_KEYS

# Migician paper, Table 1 (Acc@0.5, %), columns in tasks.TASKS order, then AVE.
PAPER_TABLE1: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    (
        "Human",
        "Human Performance",
        (99.50, 97.87, 98.00, 100.00, 96.88, 100.00, 98.99, 91.06, 92.08, 97.44, 97.18),
    ),
    (
        "LLaVA-OV-72B",
        "70B-Scale MLLMs",
        (13.26, 5.34, 26.84, 12.91, 7.64, 2.14, 17.83, 21.60, 11.88, 8.55, 13.65),
    ),
    (
        "InternVL2-76B",
        "70B-Scale MLLMs",
        (15.91, 10.64, 36.40, 30.73, 20.83, 5.74, 46.46, 41.28, 32.67, 26.50, 26.72),
    ),
    (
        "Qwen2-VL-72B",
        "70B-Scale MLLMs",
        (46.12, 46.81, 64.46, 26.73, 22.57, 18.62, 33.33, 62.53, 50.50, 17.09, 38.88),
    ),
    ("Shikra", "7B-Scale MLLMs", (0.00, 2.13, 0.74, 0.00, 0.00, 0.83, 1.01, 0.60, 0.00, 0.85, 0.62)),
    ("GroundingGPT", "7B-Scale MLLMs", (0.38, 0.00, 19.85, 0.18, 0.35, 1.75, 2.02, 19.04, 5.94, 0.00, 4.95)),
    ("Ferret", "7B-Scale MLLMs", (8.90, 7.45, 14.09, 2.36, 0.69, 1.41, 2.02, 33.27, 12.87, 1.71, 8.48)),
    ("Mantis", "7B-Scale MLLMs", (1.52, 0.00, 3.31, 12.18, 2.08, 1.00, 1.01, 10.02, 0.00, 0.85, 3.20)),
    ("LLaVA-OV-7B", "7B-Scale MLLMs", (6.06, 3.19, 3.43, 0.18, 1.04, 1.08, 9.09, 15.43, 6.93, 0.85, 4.73)),
    (
        "MiniCPM-V 2.6",
        "7B-Scale MLLMs",
        (14.58, 2.13, 14.34, 9.82, 6.25, 1.75, 11.11, 10.02, 2.97, 2.56, 7.55),
    ),
    ("mPLUG-Owl3", "7B-Scale MLLMs", (18.56, 6.38, 34.93, 8.55, 7.64, 2.41, 7.07, 22.85, 9.09, 5.98, 12.35)),
    (
        "InternVL2-8B",
        "7B-Scale MLLMs",
        (6.92, 7.45, 25.49, 20.73, 9.72, 3.49, 28.28, 30.26, 17.82, 9.40, 15.96),
    ),
    (
        "Qwen2-VL-7B",
        "7B-Scale MLLMs",
        (27.84, 38.30, 19.36, 20.73, 11.81, 25.95, 23.23, 58.52, 48.51, 11.97, 28.62),
    ),
    (
        "mPLUG-Owl3+CoT",
        "7B-Scale MLLMs",
        (16.29, 8.51, 55.39, 44.36, 25.35, 19.04, 36.36, 30.86, 18.81, 10.26, 26.52),
    ),
    (
        "InternVL2-8B+CoT",
        "7B-Scale MLLMs",
        (14.58, 7.45, 72.54, 40.91, 27.78, 28.60, 67.68, 44.49, 41.58, 11.97, 35.76),
    ),
    (
        "Qwen2-VL-7B+CoT",
        "7B-Scale MLLMs",
        (23.48, 40.43, 63.85, 62.73, 42.71, 24.85, 54.55, 43.29, 51.49, 30.77, 43.82),
    ),
    (
        "Migician",
        "7B-Scale MLLMs",
        (65.15, 46.81, 84.19, 60.07, 70.73, 66.53, 74.31, 76.77, 59.41, 34.19, 63.82),
    ),
)
OUTPUT_FILES = ("metrics.json", "metrics.csv", "results.md", "radar.png", "scoring.json")


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def metrics_csv(metrics: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scope", "name", "short", *METRIC_KEYS])
    for name, m in metrics["tasks"].items():
        writer.writerow(["task", name, tasks.BY_NAME[name].short, *[m[k] for k in METRIC_KEYS]])
    for name, m in metrics["groups"].items():
        writer.writerow(["group", name, name, *[m[k] for k in METRIC_KEYS]])
    writer.writerow(["average", "average", "AVE", *[metrics["average"][k] for k in METRIC_KEYS]])
    return buf.getvalue()


def results_markdown(metrics: dict, context: dict) -> str:
    present = [t for t in tasks.TASKS if t.name in metrics["tasks"]]
    header = ["Model", *[t.short for t in tasks.TASKS], "AVE"]
    lines = [f"# MIG-Bench results: {context.get('model', 'model')}", ""]
    for key, label in (
        ("backend", "Backend"),
        ("mode", "Mode"),
        ("format_suffix", "Format suffix"),
        ("coords", "Coordinate convention"),
        ("answer_format", "Answer format"),
    ):
        if context.get(key) is not None:
            lines.append(f"- {label}: `{context[key]}`")
    rescale = context.get("rescale", "none")
    lines.append(
        "- Migician rescale (y1*1.05, y2*1.10, capped at 0.999): "
        + ("**on** (as the paper's script does for Migician)" if rescale == "migician" else "off")
    )
    lines.append(
        f"- Instances scored: {metrics['average']['n']} (skipped and scored as misses: "
        f"{len(context.get('skipped', []))})"
    )
    if context.get("incomplete"):
        lines.append(
            f"- **Incomplete**: {context['incomplete']} instance(s) not generated yet; "
            "rerun the same command to finish them"
        )
    if len(present) < len(tasks.TASKS):
        missing = [t.short for t in tasks.TASKS if t.name not in metrics["tasks"]]
        lines.append(
            f"- Only {len(present)} of {len(tasks.TASKS)} tasks are present; group values and AVE are "
            f"the unweighted means over the present tasks (missing: {', '.join(missing)})"
        )
    lines += ["", "## Acc@0.5 in the layout of the paper's Table 1", ""]
    lines.append(_row(header))
    lines.append(_row(["---"] * len(header)))
    ours = [metrics["tasks"].get(t.name, {}).get("acc@0.5") for t in tasks.TASKS]
    lines.append(
        _row(
            [
                f"**{context.get('model', 'this run')}** (this run)",
                *map(_fmt, ours),
                _fmt(metrics["average"]["acc@0.5"]),
            ]
        )
    )
    lines.append(
        _row(["*Reference rows below: the paper's Table 1, not measured here*", *[""] * (len(header) - 1)])
    )
    for name, section, values in PAPER_TABLE1:
        lines.append(_row([f"{name} (paper, {section})", *map(_fmt, values)]))
    lines += ["", "## All metrics (%, IoU thresholds inclusive)", ""]
    lines.append(_row(["Scope", "n", "Acc@0.5", "Acc@0.3", "Acc@0.7", "mIoU"]))
    lines.append(_row(["---"] * 6))
    for t in present:
        m = metrics["tasks"][t.name]
        lines.append(_row([f"{t.short} ({t.name})", m["n"], *[_fmt(m[k]) for k in METRIC_KEYS[1:]]]))
    for g, m in metrics["groups"].items():
        lines.append(_row([f"group: {g}", m["n"], *[_fmt(m[k]) for k in METRIC_KEYS[1:]]]))
    m = metrics["average"]
    lines.append(
        _row(["**average (unweighted over tasks)**", m["n"], *[_fmt(m[k]) for k in METRIC_KEYS[1:]]])
    )
    lines += answers_section(metrics, context.get("answer_format", "official"))
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
    return "\n".join(lines) + "\n"


def answers_section(metrics: dict, answer_format: str) -> list[str]:
    """results.md lines for the answer diagnostics (well-formed share, image-index accuracy), if any."""
    present = [t for t in tasks.TASKS if "well_formed" in metrics["tasks"].get(t.name, {})]
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


def radar_png(path: Path, metrics: dict, label: str) -> None:
    """Acc@0.5 per present task, with the paper's Migician and Qwen2-VL-7B as dashed references."""
    import matplotlib

    matplotlib.use("Agg")
    import math

    import matplotlib.pyplot as plt

    present = [i for i, t in enumerate(tasks.TASKS) if t.name in metrics["tasks"]]
    names = [tasks.TASKS[i].short for i in present]
    angles = [2 * math.pi * k / len(present) for k in range(len(present))]
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="polar")

    def draw(values, style, lab):
        ax.plot(angles + angles[:1], values + values[:1], style, label=lab, linewidth=1.5)

    refs = {name: values for name, _, values in PAPER_TABLE1}
    draw([refs["Migician"][i] for i in present], "--", "Migician (paper)")
    draw([refs["Qwen2-VL-7B"][i] for i in present], ":", "Qwen2-VL-7B (paper)")
    ours = [metrics["tasks"][tasks.TASKS[i].name]["acc@0.5"] for i in present]
    draw(ours, "-o", label)
    ax.set_xticks(angles)
    ax.set_xticklabels(names)
    ax.set_ylim(0, 100)
    ax.set_title("MIG-Bench Acc@0.5 (%)")
    ax.legend(loc="lower left", bbox_to_anchor=(-0.1, -0.15), fontsize=8)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_reports(out_dir, metrics: dict, context: dict) -> None:
    """Write the five report files atomically into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a bare NaN is not JSON; scoring never produces one, and this keeps it so.
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "metrics.csv", metrics_csv(metrics))
    atomic_write_text(out / "results.md", results_markdown(metrics, context))
    atomic_write_text(out / "scoring.json", json.dumps(context, indent=2, default=str) + "\n")
    if metrics["tasks"]:
        radar_png(out / "radar.png", metrics, str(context.get("model", "this run")))


def compare(run_dirs, metric: str = "acc@0.5") -> str:
    """Markdown table: one row per run folder (its metrics.json), Table 1 columns."""
    if metric not in METRIC_KEYS[1:]:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRIC_KEYS[1:]}")
    header = ["Run", *[t.short for t in tasks.TASKS], "AVE", "tasks"]
    lines = [f"MIG-Bench {metric} (%)", "", _row(header), _row(["---"] * len(header))]
    for d in run_dirs:
        path = Path(d) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {d} a scored eval folder?")
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
            cells = [m["tasks"].get(t.name, {}).get(metric) for t in tasks.TASKS]
            ave = m["average"][metric]
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"{path} is not a metrics.json written by `python -m eval`: {exc}") from exc
        name = Path(d).resolve().name
        lines.append(_row([name, *map(_fmt, cells), _fmt(ave), len(m["tasks"])]))
    return "\n".join(lines) + "\n"
