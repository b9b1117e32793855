"""MIG-Bench's loader: read and check MIG_data.json before any model is loaded.

Why up front: a malformed file must fail in a second, not after a 40 s engine
start; a bad instance (missing image, wrong answer shape) must not stop the
other 4,294, so it is reported by index, skipped and later scored as a miss.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from core.streaming import InvalidJSONError, SourceReject, iter_json_records
from eval import tasks
from eval.benchmark import Bench, BenchError, Instance, Problem  # noqa: F401 - BenchError: API
from eval.benchmark import is_number as _is_number
from eval.benchmark import text_problem as _text_problem

ANSWER_SCALES = ("auto", "unit", "thousand")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_record(rec) -> str | None:
    """The first structural problem of one record, or None."""
    if isinstance(rec, SourceReject):
        return f"cannot be decoded: {rec.detail}"
    if not isinstance(rec, dict):
        return f"is a {type(rec).__name__}, not an object"
    task = rec.get("task")
    if task not in tasks.TASK_NAMES:
        return f"unknown task {task!r} (expected one of {', '.join(tasks.TASK_NAMES)})"
    images = rec.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        return "`images` must be a non-empty list of paths"
    if not isinstance(rec.get("question"), str) or not rec["question"].strip():
        return "`question` must be a non-empty string"
    answer = rec.get("answer")
    if not isinstance(answer, list) or len(answer) != 4 or not all(_is_number(v) for v in answer):
        return f"`answer` must be 4 numbers [x1, y1, x2, y2], got {answer!r}"
    if any(v < 0 for v in answer):
        return f"`answer` has a negative coordinate: {answer!r}"
    if "additional_info" in rec and not isinstance(rec["additional_info"], str):
        return "`additional_info` must be a string"
    if "need_format" in rec and not isinstance(rec["need_format"], bool):
        return "`need_format` must be true or false"
    for j, image in enumerate(images):
        problem = _text_problem(image)
        if problem:
            return f"image {j} path {problem}"
    for key in ("question", "additional_info"):  # a NUL byte in text is harmless; a surrogate is not
        problem = _text_problem(rec.get(key, "").replace("\x00", ""))
        if problem:
            return f"`{key}` {problem}"
    return None


def _resolve(root: Path, p: str) -> str:
    path = Path(p)
    return str(path if path.is_absolute() else (root / path).resolve())


def load_bench(
    path,
    image_root=None,
    task_names=None,
    limit: int | None = None,
    answer_scale: str = "auto",
    check_images: bool = True,
) -> Bench:
    """Read and validate a MIG_data.json; raise BenchError if it is unusable as a whole.

    image_root defaults to the parent of the file's folder (paths look like
    "./MIG-Bench/images/..."). `limit` keeps at most that many instances per task.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"bench file {path} does not exist")
    if limit is not None and limit < 1:
        raise BenchError(f"--limit must be at least 1, got {limit}")
    if answer_scale not in ANSWER_SCALES:
        raise BenchError(f"unknown answer scale {answer_scale!r}; choose from {ANSWER_SCALES}")
    bad_tasks = sorted(set(task_names or ()) - set(tasks.TASK_NAMES))
    if bad_tasks:
        raise BenchError(f"unknown task(s) {bad_tasks}; MIG-Bench tasks are {', '.join(tasks.TASK_NAMES)}")
    try:
        # One instance at a time: one that cannot be decoded (a 5,000-digit number, nesting deeper
        # than the recursion limit) becomes a problem of its own instead of failing the file.
        data = list(iter_json_records(path, skip_bad=True))
    except InvalidJSONError as exc:
        what = "must hold a JSON list of instances" if "where a list" in str(exc) else "is not valid JSON"
        raise BenchError(f"bench file {path} {what}: {exc}") from exc
    except OSError as exc:
        raise BenchError(f"cannot read bench file {path}: {exc}") from exc
    if not data:
        raise BenchError(f"bench file {path} holds no instances")

    root = Path(image_root) if image_root else path.resolve().parent.parent
    bench = Bench(path=path, image_root=root, sha256=_sha256(path), answer_scale="unit", total=len(data))
    reasons = [_check_record(rec) for rec in data]
    valid = [rec for rec, reason in zip(data, reasons, strict=True) if reason is None]
    if not valid:
        first = "; ".join(f"instance {i}: {r}" for i, r in enumerate(reasons) if r)
        raise BenchError(f"bench file {path} has no well-formed instance ({first[:500]})")

    scale = answer_scale
    if scale == "auto":
        scale = "thousand" if any(v > 1 for r in valid for v in r["answer"]) else "unit"
    bench.answer_scale = scale
    div = 1000.0 if scale == "thousand" else 1.0

    wanted = set(task_names) if task_names else None
    per_task: dict[str, int] = {}
    for idx, (rec, reason) in enumerate(zip(data, reasons, strict=True)):
        task = rec.get("task") if isinstance(rec, dict) and rec.get("task") in tasks.TASK_NAMES else None
        if task is not None:
            if (wanted is not None and task not in wanted) or (
                limit is not None and per_task.get(task, 0) >= limit
            ):
                continue
            per_task[task] = per_task.get(task, 0) + 1
        elif wanted is not None:
            continue
        if reason:
            bench.problems.append(Problem(idx, task, reason))
            continue
        answer = [float(v) / div for v in rec["answer"]]
        if max(answer) > 1.0 + 1e-9:
            bench.problems.append(Problem(idx, task, f"`answer` {rec['answer']!r} lies outside the image"))
            continue
        paths = [_resolve(root, p) for p in rec["images"]]
        if check_images:
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                bench.problems.append(Problem(idx, task, f"image not found: {missing[0]}"))
                continue
        if answer[2] <= answer[0] or answer[3] <= answer[1]:
            bench.warnings.append(
                f"instance {idx} ({task}): answer box {rec['answer']} is empty or inverted; "
                "every prediction scores 0 on it, as in the paper's script"
            )
        bench.instances.append(
            Instance(
                index=idx,
                task=task,
                images=list(rec["images"]),
                image_paths=paths,
                question=rec["question"],
                answer=answer,
                additional_info=rec.get("additional_info", ""),
                need_format=rec.get("need_format", True),
            )
        )
    if not bench.instances and not bench.problems:
        raise BenchError(f"no instance of {path} matches the selected tasks {sorted(wanted or [])}")
    bench.problems.sort(key=lambda p: p.index)
    return bench
