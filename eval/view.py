"""`python -m eval view RUN`: every scored instance of a run on its images, boxes drawn (RUN/view/).

Why: the first question after a score is where the model fails and why (the right object in the wrong
image, a box beside the object, an answer that did not parse). Each instance shows its question, all its
images as thumbnails, the ground-truth box on the target image and the predicted box on the image the
answer names (else the target), the raw answer (escaped), its outcome and IoU. Failures come first;
pages filter by outcome. The instances and their scores are the reports' own (eval.runs).
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.boxpage import PAGE_SIZE, THUMB_SIDE, Box, Card, Group, Picture, Written, write_pages
from eval.outcomes import FAILURES, OUTCOMES, named_image_index
from eval.runs import ScoredRun, load_run

log = logging.getLogger(__name__)

VIEW_DIR = "view"
SHOWN_ORDER = (*FAILURES, "hit")  # failures first
_RANK = {o: k for k, o in enumerate(SHOWN_ORDER)}


def _valid(k, n: int) -> bool:
    return isinstance(k, int) and not isinstance(k, bool) and 0 <= k < n


def _unit_box(values) -> tuple[float, float, float, float] | None:
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v != v for v in values):
        return None
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def pred_image(run: ScoredRun, rec: dict) -> int | None:
    """The 0-based image a predicted box is drawn on: the one step 2 of CoT saw (mode cot), else the one
    the answer names, else the target (else the only image)."""
    n = len(rec.get("images") or [])
    if run.protocol.get("mode") == "cot" and _valid(rec.get("cot_image"), n):
        return rec["cot_image"]
    named = named_image_index(rec, run.answer_format)
    if named is not None and named < n:
        return named
    target = rec.get("target_image")
    return target if _valid(target, n) else (0 if n == 1 else None)


def card_of(run: ScoredRun, rec: dict) -> Card:
    images = rec.get("images") if isinstance(rec.get("images"), list) else []
    target = rec.get("target_image")
    gt_on = target if _valid(target, len(images)) else (0 if len(images) == 1 else None)
    pred_on = pred_image(run, rec)
    gt, pred = _unit_box(rec.get("answer")), _unit_box(rec.get("box"))
    sizes = rec.get("image_sizes") if isinstance(rec.get("image_sizes"), list) else []
    pictures = []
    for k, image in enumerate(images):
        boxes = []
        if k == gt_on and gt:
            boxes.append(Box("gt", gt))
        if k == pred_on and pred:
            boxes.append(Box("pred", pred))
        caption = f"image {k + 1}" + (" (target)" if k == target else "")
        if k == pred_on and pred and k != gt_on:
            caption += " (the answer's)"
        size = (
            tuple(sizes[k]) if k < len(sizes) and isinstance(sizes[k], list) and len(sizes[k]) == 2 else None
        )
        pictures.append(Picture(run.image_path(image), caption, boxes, size, target=k == gt_on))
    facts: list[tuple[str, object]] = [("IoU", f"{float(rec.get('iou') or 0.0):.3f}")]
    if rec.get("parsed") is not None:
        facts.append(("numbers read", rec["parsed"]))
    if rec.get("parsed") is not None and pred is None:
        facts.append(("box", f"not convertible under coords={run.coords}"))
    if _valid(target, len(images)):
        facts.append(("target image", target + 1))
    named = named_image_index(rec, run.answer_format)
    if named is not None:
        facts.append(("answer names image", named + 1))
    texts: list[tuple[str, object]] = []
    if rec.get("skipped"):
        texts.append(("skipped", rec["skipped"]))
    texts.append(("question (prompt)", rec.get("prompt", "")))
    step1 = rec.get("step1") if isinstance(rec.get("step1"), dict) else None
    if step1:
        texts.append(("CoT step 1 answer", step1.get("response", "")))
    texts.append(("answer (raw)", rec.get("response", "")))
    task = rec.get("task")
    title = run.benchmark.by_name[task].short if task in run.benchmark.by_name else str(task)
    return Card(rec.get("index", -1), rec["outcome"], title, pictures, texts, facts)


def write_view(
    run_dir,
    tasks: list[str] | None = None,
    outcomes: list[str] | None = None,
    limit: int | None = None,
    page_size: int = PAGE_SIZE,
    thumb_side: int = THUMB_SIDE,
    workers: int = 1,
) -> Written:
    """RUN/view/: index.html and a page series per task, failures first; returns what was written.
    `workers`: processes writing the thumbnails (the slow part of a first view)."""
    run = load_run(run_dir)
    bad = sorted(set(outcomes or ()) - set(OUTCOMES))
    if bad:
        raise ValueError(f"unknown outcome(s) {bad}; choose from {', '.join(OUTCOMES)}")
    run.benchmark.check_tasks(tasks)
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    groups = []
    for task in run.benchmark.tasks:
        if tasks and task.name not in tasks:
            continue
        recs = [r for r in run.records if r.get("task") == task.name]
        recs = [r for r in recs if not outcomes or r["outcome"] in outcomes]
        recs.sort(key=lambda r: (_RANK[r["outcome"]], r.get("index", -1)))
        if recs:
            label = task.short if task.short == task.name else f"{task.short} ({task.name})"
            groups.append(Group(task.name, label, [card_of(run, r) for r in recs[:limit]]))
    shown = sum(len(g.cards) for g in groups)
    summary = [
        f"{run.benchmark.title}, {run.label}: {shown} of {len(run.records)} instance(s) shown"
        + (f" (tasks {', '.join(tasks)})" if tasks else "")
        + (f" (outcomes {', '.join(outcomes)})" if outcomes else "")
        + (f" (at most {limit} per task)" if limit else ""),
        f"answer format {run.answer_format}, coords {run.coords}, rescale {run.rescale}; "
        f"predictions: {run.predictions}",
        "hit: IoU >= 0.5 (the Acc@0.5 count); miss: a box, IoU < 0.5; wrong_image: the answer names an image "
        "that is not the target; unparsed: no box read. Failures come first on each task's pages.",
    ]
    links = [("results.md", "../results.md")] if (Path(run_dir) / "results.md").is_file() else []
    return write_pages(
        Path(run_dir) / VIEW_DIR,
        f"{run.benchmark.title}: {run.label}",
        groups,
        SHOWN_ORDER,
        summary,
        links,
        page_size,
        thumb_side,
        workers=workers,
    )
