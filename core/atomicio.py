"""Atomic file and folder outputs shared by converters, merge_tool, eval and demo.

Why: a crash or a refusal must never leave a half-written file or folder at
the user's path. Everything is written to a temporary sibling and renamed;
SIGTERM and SIGHUP are turned into an exception (`exit_on_signals`) so the
temporary sibling is removed then too. A command that reads one path and
writes another must never be handed the same file twice (`ensure_distinct_paths`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO


class OutputExistsError(FileExistsError):
    """Raised instead of overwriting a user's file or folder without --force."""


class SamePathError(ValueError):
    """Two paths of one command (two outputs, or an input and an output) name the same file."""


class Interrupted(SystemExit):
    """SIGTERM/SIGHUP as an exception: `with` blocks unwind (temporary files go), exit code 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


def _same_file(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except (OSError, ValueError):
        return False


def ensure_distinct_paths(paths: Mapping[str, str | os.PathLike | Iterable | None]) -> None:
    """Refuse when two of the named paths are one file (after resolving links), before any work.

    `paths` maps a flag (e.g. "--output") to a path, None (unused) or a list of paths
    (e.g. several --input files); --force never lifts this refusal. The message names both flags.
    """
    named: list[tuple[str, str]] = []
    for flag, value in paths.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for v in values:
            try:
                named.append((flag, os.path.realpath(os.fspath(v))))
            except (ValueError, OSError) as err:  # a NUL byte in the name
                raise SamePathError(f"{flag} {v!r} is not a usable path: {err}") from None
    for i, (flag_a, a) in enumerate(named):
        for flag_b, b in named[i + 1 :]:
            if _same_file(a, b):
                what = f"{flag_a} is given twice" if flag_a == flag_b else f"{flag_a} and {flag_b} are"
                raise SamePathError(
                    f"{what} the same file ({a}); a command never writes over a path it reads or "
                    "writes elsewhere, even with --force"
                )


def _signal_to_exception(signum, frame) -> None:
    # A second signal while unwinding terminates the default way (so a stuck cleanup can be killed).
    signal.signal(signum, signal.SIG_DFL)
    raise Interrupted(signum)


def exit_on_signals(signums: Iterable[int] = (signal.SIGTERM, signal.SIGHUP)) -> None:
    """Make SIGTERM/SIGHUP raise `Interrupted` in the main thread (SIGINT already raises KeyboardInterrupt).

    Called by every command line entry point: an exception unwinds atomic_file/atomic_dir,
    which remove their temporary siblings, where the default action would kill the process
    and leave `.NAME.XXXX.tmp` files behind.
    """
    for signum in signums:
        with contextlib.suppress(ValueError, OSError):  # not the main thread, or no such signal here
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _signal_to_exception)


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
    if "b" in mode:
        encoding = None
    made: list[str] = []
    try:
        fd = _new_sibling(path, lambda name: os.open(name, _NEW_FILE, 0o666), made)  # the umask applies
        with open(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(made[0], path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError, IndexError):
            os.unlink(made[0])
        raise


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _new_sibling(path: Path, create, made: list[str]):
    """create(name) for a new hidden `.NAME.<random>.tmp` beside `path`; the name is put in `made` first.

    Why the name goes first: a stopping signal can be handled in any thread (a multiprocessing pool's), so
    no signal mask keeps KeyboardInterrupt out of the moment between a file's creation and its name reaching
    the caller (tempfile.mkstemp has one: an interrupted conversion left its temporary file). With the name
    known before the file exists, the caller's cleanup removes whatever may have been made.
    """
    while True:
        made[:] = [os.path.join(path.parent, f".{path.name}.{secrets.token_hex(8)}.tmp")]
        try:
            return create(made[0])
        except FileExistsError:
            continue


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`.

    On any exception the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    refuse_existing(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    try:
        _new_sibling(path, lambda name: os.mkdir(name, 0o777), made)  # an ordinary folder: the umask applies
        tmp = Path(made[0])
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        if made:
            shutil.rmtree(made[0], ignore_errors=True)
        raise
