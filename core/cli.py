"""One exit-code table and one error style for every command line of the project.

Why one table: a shell script or a scheduler that runs `python -m converters`, `merge_tool`, `eval`
and `rl` must read their exit codes the same way, and a user must recognise an error line whichever
tool printed it. Library code never prints or exits: it raises or logs through `logging`; only the
`__main__` modules call `fail` / `setup_logging` and return one of these codes.

    0  ok               everything asked for was done
    1  bad input        a file, record, tensor or option value cannot be used; nothing partial was kept
    2  usage            the command line itself is wrong (argparse's own code for the same thing)
    3  partial result   some work is done and kept, some is not (rerun the same command to finish it)
    128+N               stopped by signal N (130 for Ctrl-C), as shells report it
"""

from __future__ import annotations

import logging
import os
import signal
import sys

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_BAD_INPUT: "bad input: a file, record, tensor or option value cannot be used",
    EXIT_USAGE: "usage: the command line is wrong",
    EXIT_PARTIAL: "partial result: finished work is kept; rerun the same command to finish",
}


def fail(prog: str, message, code: int = EXIT_BAD_INPUT) -> int:
    """Print `prog: error: message` to stderr (argparse's own style) and return `code`."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def signal_code(signum: int) -> int:
    """The exit code of a run stopped by signal `signum` (128 + N, as a shell reports it)."""
    return 128 + int(signum)


def setup_logging(prog: str, level: int = logging.INFO) -> None:
    """Library log records go to stderr as `prog: message` (warnings as `prog: warning: message`)."""

    class _Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            kind = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            return f"{prog}: {kind}{record.getMessage()}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_migician", False)]:
        root.removeHandler(old)
    handler._migician = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def prog_name(module: str, script: str) -> str:
    """The name to print, as the user typed it: `script` (a console script) or `python -m module`.

    Why: argparse's usage errors and `fail`'s lines then share one prefix whichever way the tool runs.
    """
    return script if os.path.basename(sys.argv[0] or "") == script else f"python -m {module}"
