"""Check that image files exist and decode, on every core, each file once, resumably.

Why: LLaMA-Factory opens images lazily during training, so one truncated JPEG
among millions stops a multi-day run. Decoding them all up front is the
slowest part of data preparation, so it runs in worker processes, skips files
already checked in this run, and remembers good files (by size and mtime) in
an append-only cache so an interrupted run resumes where it stopped. The cache starts with a header
line (CACHE_HEADER) so a file that is not one is never appended to without --force.
JPEGs are decoded with libjpeg's 1/8 DCT scaling: every compressed byte is
still read (truncation and corrupt streams still fail) at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import stat
import time
from pathlib import Path

from PIL import Image

from core.atomicio import OutputExistsError

CACHE_HEADER = "# migician image-check cache v1: size<TAB>mtime_ns<TAB>path of each image that decoded\n"

Result = tuple[str, str | None, str, int, int]  # path, reason or None, detail, size, mtime_ns


def check_image(path: str, known: tuple[int, int] | None = None) -> Result:
    """Return (path, None|'missing_image'|'undecodable_image', detail, size, mtime_ns)."""
    try:
        st = os.stat(path)
    except OSError as err:
        return path, "missing_image", f"{path}: {err.strerror or err}", 0, 0
    except ValueError as err:  # a NUL byte or a lone surrogate: no file can have that name
        return path, "missing_image", f"{path!r}: not a usable file name ({err})", 0, 0
    if not stat.S_ISREG(st.st_mode):
        return path, "missing_image", f"{path}: not a regular file", 0, 0
    if known is not None and known == (st.st_size, st.st_mtime_ns):
        return path, None, "cached", st.st_size, st.st_mtime_ns
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as err:  # PIL raises many types for bad data
        return path, "undecodable_image", f"{path}: {type(err).__name__}: {err}", st.st_size, st.st_mtime_ns
    return path, None, "", st.st_size, st.st_mtime_ns


def _check_many(items: list[tuple[str, tuple[int, int] | None]]) -> list[Result]:
    return [check_image(path, known) for path, known in items]


def is_image_cache(path: Path) -> bool:
    """True for a cache this module wrote: the header line, or (older caches) a first `size\tmtime\tpath` line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    if first == CACHE_HEADER:
        return True
    parts = first.rstrip("\n").split("\t", 2)
    return len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and first.endswith("\n")


class ImageChecker:
    """Check image paths asynchronously in `workers` processes (0: in this process)."""

    def __init__(
        self, workers: int | None = None, cache_path: str | os.PathLike | None = None, force: bool = False
    ):
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self._pool = multiprocessing.get_context("spawn").Pool(self.workers) if self.workers > 0 else None
        self._good: set[int] = set()
        self._bad: dict[str, tuple[str, str]] = {}
        self._inflight: set[str] = set()
        self._cached: dict[int, tuple[int, int]] = {}
        self._cache_handle = None
        self.decoded = 0  # files actually opened and decoded in this run
        self.from_cache = 0
        self.started: float | None = None
        self.busy_seconds = 0.0
        if cache_path is not None:
            cache_path = Path(cache_path)
            fresh = not cache_path.exists() or cache_path.stat().st_size == 0
            if not fresh and not is_image_cache(cache_path):
                if not force:
                    raise OutputExistsError(
                        f"--image-cache {cache_path} exists and is not an image-check cache; "
                        "pass --force to replace it"
                    )
                fresh = True  # --force: start a new cache in its place
            elif not fresh:
                self._load_cache(cache_path)
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            # Kept open for the checker's lifetime (closed in close()), appended after each batch.
            self._cache_handle = open(cache_path, "w" if fresh else "a", encoding="utf-8")  # noqa: SIM115
            if fresh:
                self._cache_handle.write(CACHE_HEADER)
                self._cache_handle.flush()

    def _load_cache(self, path: Path) -> None:
        """Known-good (size, mtime) by path hash; torn or foreign lines are ignored."""
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parts = line.rstrip("\n").split("\t", 2)
                if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
                    continue  # a line torn by an interrupted run
                self._cached[hash(parts[2])] = (int(parts[0]), int(parts[1]))

    def submit(self, paths: list[str]):
        """Start checking the paths not yet known; return a ticket for wait()."""
        todo = []
        for path in paths:
            if hash(path) in self._good or path in self._bad or path in self._inflight:
                continue
            self._inflight.add(path)
            todo.append((path, self._cached.get(hash(path))))
        if self.started is None:
            self.started = time.perf_counter()
        if not todo:
            return None
        if self._pool is None:
            return _check_many(todo)
        size = max(1, min(32, len(todo) // (4 * self.workers)))
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        return self._pool.map_async(_check_many, chunks)

    def wait(self, ticket) -> None:
        """Block until a ticket's checks are done and record their results."""
        if ticket is None:
            return
        results = ticket if isinstance(ticket, list) else [r for chunk in ticket.get() for r in chunk]
        new_lines = []
        for path, reason, detail, size, mtime in results:
            self._inflight.discard(path)
            if reason is None:
                self._good.add(hash(path))
                if detail == "cached":
                    self.from_cache += 1
                else:
                    self.decoded += 1
                    if "\n" not in path:  # a name with a newline would forge a cache line
                        new_lines.append(f"{size}\t{mtime}\t{path}\n")
            else:
                self.decoded += reason == "undecodable_image"
                self._bad[path] = (reason, detail)
        if self._cache_handle is not None and new_lines:
            self._cache_handle.write("".join(new_lines))
            self._cache_handle.flush()
        if self.started is not None:
            self.busy_seconds = time.perf_counter() - self.started

    def problem(self, path: str) -> tuple[str, str] | None:
        """(reason, detail) for a checked bad path, None for a good one."""
        if hash(path) in self._good:
            return None
        return self._bad.get(path, ("missing_image", f"{path}: not checked"))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        if self._cache_handle is not None:
            with contextlib.suppress(OSError):
                self._cache_handle.close()
            self._cache_handle = None

    def __enter__(self) -> ImageChecker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
