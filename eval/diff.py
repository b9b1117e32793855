"""`python -m eval diff RUN_A RUN_B`: what changed between two runs of one benchmark.

Why: "my score is not the paper's" and "the new checkpoint is worse on multi-view" are questions about
two runs. The answer is the settings that differ (from each run.json: model, prompt suffix, answer
format, pixel budget, max tokens, dtype, backend, library versions, and the scoring options), per task
the outcome transitions (hit->miss, miss->hit, hit->wrong_image, ...) over the instances both runs
scored, and every flipped instance linked into both runs' viewers (`eval view`). Both runs are read and
scored exactly as their reports were (eval.runs); a run against itself shows no difference.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from core.boxpage import page_of
from eval.runs import ScoredRun, load_run, run_benchmark
from eval.view import VIEW_DIR
from families.chat import PAPER_LAYOUT

# (name shown, where in run.json) in the order shown; ("scoring", key) is the scoring option the reports used.
SETTINGS = (
    ("model", ("protocol", "model")),
    ("label", ("info", "label")),
    ("backend", ("protocol", "backend")),
    ("mode", ("protocol", "mode")),
    ("family", ("info", "family")),
    ("format suffix", ("protocol", "format_suffix")),
    ("format when", ("protocol", "format_when")),
    ("answer format", ("scoring", "answer_format")),
    ("coords", ("scoring", "coords")),
    ("rescale", ("scoring", "rescale")),
    ("max new tokens", ("protocol", "max_new_tokens")),
    ("repetition penalty", ("protocol", "repetition_penalty")),
    ("dtype", ("protocol", "dtype")),
    ("pixel budget", ("info", "pixel_budget")),
    ("processor pixels", ("info", "processor_pixels")),
    ("image loading", ("protocol", "image_loading")),
    ("prompt layout", ("protocol", "prompt_layout")),
    ("bench data (sha256)", ("protocol", "bench_sha256")),
    ("answer scale", ("protocol", "answer_scale")),
)
NOT_RECORDED = "(not recorded)"
# what a setting recorded only when it differs from its default means when absent
UNRECORDED_DEFAULTS = {("protocol", "prompt_layout"): PAPER_LAYOUT}


@dataclass
class Flip:
    task: str
    index: int
    before: str
    after: str
    iou_a: float
    iou_b: float


def setting(run: ScoredRun, where: tuple[str, str]):
    part, key = where
    if part == "scoring":
        return getattr(run, key)
    source = run.protocol if part == "protocol" else run.info
    return source.get(key, UNRECORDED_DEFAULTS.get(where, NOT_RECORDED))


def settings_diff(a: ScoredRun, b: ScoredRun) -> list[tuple[str, str, str]]:
    """(setting, A's value, B's value) for every recorded setting, library version included, that differs."""
    rows = []
    for name, where in SETTINGS:
        va, vb = setting(a, where), setting(b, where)
        if va != vb:
            rows.append((name, _show(va), _show(vb)))
    versions_a, versions_b = a.info.get("versions") or {}, b.info.get("versions") or {}
    for lib in sorted(set(versions_a) | set(versions_b)):
        va, vb = versions_a.get(lib, NOT_RECORDED), versions_b.get(lib, NOT_RECORDED)
        if va != vb:
            rows.append((f"version of {lib}", _show(va), _show(vb)))
    return rows


def _show(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 200 else text[:200] + "..."


def _cell(text: str) -> str:
    """Recorded text in a markdown table cell: one line, no column breaks, code-quoted."""
    return "`" + text.replace("`", "'").replace("|", "\\|").replace("\n", "\\n") + "`"


def flips(a: ScoredRun, b: ScoredRun) -> tuple[list[Flip], dict[str, Counter], dict[str, int]]:
    """Instances whose outcome differs, the transitions per task, and instances both runs scored per task."""
    ra, rb = a.by_index, b.by_index
    out, transitions, both = [], {}, Counter()
    for index in sorted(set(ra) & set(rb)):
        x, y = ra[index], rb[index]
        task = x.get("task")
        both[task] += 1
        transitions.setdefault(task, Counter())
        if x["outcome"] != y["outcome"]:
            transitions[task][(x["outcome"], y["outcome"])] += 1
            out.append(Flip(task, index, x["outcome"], y["outcome"], float(x["iou"]), float(y["iou"])))
    return out, transitions, dict(both)


def link(run: ScoredRun, index: int) -> str:
    """A file URL of the instance in the run's viewer: its page (view/manifest.json), else the index page,
    which finds it (or says it is not in that view)."""
    view = (run.dir / VIEW_DIR).resolve()
    return f"{(view / (page_of(view, index) or 'index.html')).as_uri()}#i{index}"


def diff_runs(run_a, run_b, max_flips: int | None = 20) -> tuple[str, bool]:
    """The markdown report and whether anything differs. ValueError for runs of two benchmarks."""
    bench_a, bench_b = run_benchmark(run_a), run_benchmark(run_b)
    if bench_a.name != bench_b.name:
        raise ValueError(
            f"{run_a} is a {bench_a.title} run and {run_b} a {bench_b.title} run; "
            "eval diff compares two runs of one benchmark"
        )
    a, b = load_run(run_a), load_run(run_b)
    rows = settings_diff(a, b)
    flipped, transitions, both = flips(a, b)
    shorts = {t.name: t.short for t in a.benchmark.tasks}
    lines = [f"# eval diff ({a.benchmark.title}): A = {a.label} ({run_a}), B = {b.label} ({run_b})", ""]
    only_a, only_b = len(set(a.by_index) - set(b.by_index)), len(set(b.by_index) - set(a.by_index))
    same = not rows and not flipped and not only_a and not only_b
    if same:
        lines.append("No difference: the same recorded settings, and every instance has the same outcome.")
    if rows:
        lines += ["## Settings that differ", "", "| setting | A | B |", "| --- | --- | --- |"]
        lines += [f"| {name} | {_cell(va)} | {_cell(vb)} |" for name, va, vb in rows]
        lines.append("")
    elif not same:
        lines += ["Settings: the same as far as run.json records them.", ""]
    if only_a or only_b:
        lines += [f"Instances scored by one run only: {only_a} in A, {only_b} in B (left out below).", ""]
    if not same:
        lines += [
            "## Outcomes per task (instances both runs scored)",
            "",
            "| task | n | hits A | hits B | changed | transitions (A->B) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        ra, rb = a.by_index, b.by_index
        for task in a.benchmark.task_names:
            if task not in both:
                continue
            common = [i for i in sorted(set(ra) & set(rb)) if ra[i].get("task") == task]
            hits_a = sum(ra[i]["outcome"] == "hit" for i in common)
            hits_b = sum(rb[i]["outcome"] == "hit" for i in common)
            moves = ", ".join(f"{x}->{y} {n}" for (x, y), n in transitions[task].most_common())
            changed = sum(transitions[task].values())
            lines.append(
                f"| {shorts[task]} | {both[task]} | {hits_a} | {hits_b} | {changed} | {moves or '-'} |"
            )
        lines.append("")
    if flipped:
        missing = [str(r.dir) for r in (a, b) if not (r.dir / VIEW_DIR / "index.html").is_file()]
        lines += [f"## Flipped instances ({len(flipped)})", ""]
        if missing:
            lines += [f"(No viewer yet in {' and '.join(missing)}: `python -m eval view RUN` writes it.)", ""]
        for task in a.benchmark.task_names:
            mine = [f for f in flipped if f.task == task]
            if not mine:
                continue
            lines.append(f"### {shorts[task]} ({task}): {len(mine)}")
            for f in mine[:max_flips] if max_flips else mine:
                lines.append(
                    f"- #{f.index}: {f.before} -> {f.after} (IoU {f.iou_a:.3f} -> {f.iou_b:.3f}): "
                    f"[A]({link(a, f.index)}) [B]({link(b, f.index)})"
                )
            if max_flips and len(mine) > max_flips:
                lines.append(f"- ... {len(mine) - max_flips} more (`--all` lists every one)")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n", not same
