"""Atomic file and folder outputs shared by converters, merge_tool, eval and demo.

Why: a crash or a refusal must never leave a half-written file or folder at
the user's path. Everything is written to a temporary sibling and renamed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class OutputExistsError(FileExistsError):
    """Raised instead of overwriting a user's file or folder without --force."""


def refuse_existing(path: str | os.PathLike, force: bool, what: str = "output") -> None:
    """Refuse to replace an existing file or non-empty folder unless force is set."""
    p = Path(path)
    busy = p.is_file() or (p.is_dir() and any(p.iterdir()))
    if busy and not force:
        raise OutputExistsError(f"{what} {p} already exists; pass --force to overwrite it")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    if "b" in mode:
        encoding = None
    try:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`.

    On any exception the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    refuse_existing(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_current_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
