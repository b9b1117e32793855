"""Loading a multiple-choice benchmark's published JSON files (MIBench, MMIU) into a Bench.

Why shared: both publish lists of records (images, a question, options, the answer) in one or more
JSON files under a root folder, and both need the same care: an instance's index counts every record
of every file in a fixed order, whatever tasks are picked (so a partial run resumes into a full one),
a record that cannot be asked (no image, no options, an answer that is not an option, a missing image
file, an image path that is absolute or climbs out of the image root with `..`) is a Problem scored as a miss and named in the report, never dropped, and a file that cannot be
read at all stops the run naming the file. Each benchmark module says only how one record reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.jsonfile import JSONFileError, read_json
from eval.benchmark import Bench, BenchError, Instance, Problem, sha256_of, text_problem

MAX_OPTIONS = 26  # lettered A-Z


@dataclass
class ChoiceRecord:
    """What a benchmark module reads from one raw record."""

    task: str
    images: list[str]  # as written in the data
    question: str  # the full user text the model sees (the benchmark's protocol applied)
    options: list[str]
    correct: int


def read_list(path: Path) -> list:
    """A JSON file holding a list of records; BenchError naming the file when it is not one."""
    try:
        return read_json(path, list, "a list of records")
    except JSONFileError as err:
        raise BenchError(str(err)) from None


def relative_parts(raw: str) -> tuple[str, ...]:
    """A published relative path without its leading ./ and ../ (MMIU writes both)."""
    parts = Path(raw.replace("\\", "/")).parts
    while parts and parts[0] in (".", ".."):
        parts = parts[1:]
    return parts


def check_choice(options, correct) -> str | None:
    """Why options and answer cannot be scored (None: fine)."""
    if not isinstance(options, list) or not options:
        return "no options"
    if len(options) > MAX_OPTIONS:
        return f"{len(options)} options (at most {MAX_OPTIONS})"
    for k, o in enumerate(options):
        if not isinstance(o, str) or not o.strip():
            return f"option {k} is not a non-empty string"
        if text_problem(o):
            return f"option {k} {text_problem(o)}"
    if not isinstance(correct, int) or not 0 <= correct < len(options):
        return "its answer is not one of its options"
    return None


def make_choice_loader(
    files: tuple[str, ...],
    read_record: Callable[[dict], ChoiceRecord],
    resolve_image: Callable[[Path, str], Path],
    task_names: tuple[str, ...],
    open_tasks: bool,
    layout: str,
):
    """A Benchmark.load over `files` (those present, in this order) under --data-root.

    read_record(raw) -> ChoiceRecord, or ValueError saying why the record cannot be asked;
    resolve_image(root, raw path) -> the file. `layout` is the error's description of the root.
    """

    def load(source, image_root=None, tasks=None, limit=None, answer_scale="auto", check_images=True):
        root = Path(source)
        present = [root / f for f in files if (root / f).is_file()]
        if not present:
            raise BenchError(f"--data-root {root} holds none of {', '.join(files)}: {layout}")
        if limit is not None and limit < 1:
            raise BenchError(f"--limit must be at least 1, got {limit}")
        wanted = set(tasks) if tasks else None
        if wanted and not open_tasks and wanted - set(task_names):
            raise BenchError(f"unknown task(s) {sorted(wanted - set(task_names))}")
        img_root = Path(image_root) if image_root else root
        bench = Bench(
            path=present[0], image_root=img_root, sha256=sha256_of(present), answer_scale="choice", total=0
        )
        index, per_task = 0, {}
        for path in present:
            for k, raw in enumerate(read_list(path)):
                idx, index = index, index + 1
                bench.total += 1
                task = raw.get("task") if isinstance(raw, dict) else None
                task = task if isinstance(task, str) and task else None
                if wanted is not None and task not in wanted:
                    continue
                if limit is not None and per_task.get(task, 0) >= limit:
                    continue
                per_task[task] = per_task.get(task, 0) + 1
                where = f"{path.name} record {k}"
                if task is None:
                    bench.problems.append(Problem(idx, None, f"{where}: no `task`"))
                    continue
                if task not in task_names and not open_tasks:
                    bench.problems.append(Problem(idx, task, f"{where}: unknown task {task!r:.60}"))
                    continue
                try:
                    rec = read_record(raw)
                except (ValueError, TypeError, KeyError) as err:
                    bench.problems.append(Problem(idx, task, f"{where}: {err}"))
                    continue
                why = check_choice(rec.options, rec.correct) or _images_problem(rec.images)
                why = why or (
                    f"question {text_problem(rec.question)}" if text_problem(rec.question) else None
                )
                paths = [] if why else [resolve_image(img_root, p) for p in rec.images]
                why = why or _outside(img_root, rec.images, paths)
                if not why and check_images:
                    missing = next((p for p in paths if not os.path.isfile(p)), None)
                    why = f"image not found: {missing}" if missing else None
                if why:
                    bench.problems.append(Problem(idx, task, f"{where}: {why}"))
                    continue
                bench.instances.append(
                    Instance(
                        index=idx,
                        task=task,
                        images=rec.images,
                        image_paths=[str(p) for p in paths],
                        question=rec.question,
                        answer=[],
                        need_format=False,
                        options=rec.options,
                        correct=rec.correct,
                    )
                )
        if not bench.instances and not bench.problems:
            what = f"task(s) {', '.join(sorted(wanted))}" if wanted else "records"
            raise BenchError(f"{', '.join(str(p) for p in present)} hold no {what}")
        return bench

    return load


def _outside(root: Path, raw: list[str], paths: list[Path]) -> str | None:
    """image_outside_root (as the converters say it) for the first image that leaves `root`: an absolute
    path, or one whose `..` climbs out; a benchmark must not make the model read arbitrary files."""
    prefix = os.path.abspath(root).rstrip("/") + "/"
    for given, path in zip(raw, paths, strict=True):
        if Path(given).is_absolute() or not os.path.normpath(os.path.abspath(path)).startswith(prefix):
            return f"image_outside_root: image path {given[:200]!r} leaves the image root {root}"
    return None


def _images_problem(images) -> str | None:
    if not isinstance(images, list) or not images:
        return "no images"
    for p in images:
        if not isinstance(p, str) or not p or text_problem(p):
            return f"image path {p!r:.60} is not a usable path"
    return None


def first_existing(root: Path, raw: str) -> Path:
    """root/raw (without leading ./ ../), else the same without its first folder (MMIU's
    `../MMIU-Benchmark/<task>/x.jpg` under a root that is that folder); the first when neither exists."""
    parts = relative_parts(raw)
    if Path(raw).is_absolute() or not parts:
        return Path(raw)
    first = root.joinpath(*parts)
    if not first.exists() and len(parts) > 1 and root.joinpath(*parts[1:]).exists():
        return root.joinpath(*parts[1:])
    return first
