"""Shared fixtures: the two environments and a tiny Qwen2-VL built once per session.

The suite runs in the training environment (.venv). Code that needs vLLM runs
in .venv-eval through a subprocess; if that environment is missing the tests
that need it fail (they are not skipped: `make test` builds it first).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def train_python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def eval_python() -> str:
    path = Path(os.environ.get("EVAL_PYTHON", REPO / ".venv-eval" / "bin" / "python"))
    assert path.exists(), f"evaluation environment missing: {path} (run `make setup`)"
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2-VL checkpoint (seed 0), shared by the whole session."""
    from demo.tiny_model import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny") / "tiny-qwen2vl", seed=0)


def run_in(python: str, args: list[str], timeout: float = 900, env: dict | None = None, **kwargs):
    """Run `python args...` from the repo root, raising with the output on failure."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    proc = subprocess.run(
        [python, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def default_signals() -> None:
    """Popen preexec_fn: SIGINT/SIGHUP/SIGTERM at their defaults in the child.

    Why: a runner started in the background (`cmd &`, `nohup`) hands its children SIGINT and SIGHUP
    ignored, and an ignored signal stays ignored across exec (Python then installs no Ctrl-C handler).
    The signal tests send those signals on purpose, so they must not depend on how pytest was launched.
    """
    import signal

    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def run_main(module: str, args, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` run in this process: the same main(), its exit code, stdout and stderr.

    Why: a fresh interpreter per CLI call costs a second of imports; the unit tests call the CLIs
    hundreds of times (`make test-unit`). Tests of what only a process shows (signals, console
    scripts, the environments) still spawn one.
    """
    import contextlib
    import importlib
    import io
    import logging
    import signal

    mod = importlib.import_module(module)
    main = (importlib.import_module(f"{module}.__main__") if hasattr(mod, "__path__") else mod).main
    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            for signum, handler in handlers.items():  # a CLI installs its own; pytest keeps pytest's
                signal.signal(signum, handler)
            root = logging.getLogger()
            for handler in [h for h in root.handlers if getattr(h, "_migician", False)]:
                root.removeHandler(handler)  # it writes to `err`, which is gone after this call
    proc = subprocess.CompletedProcess([module, *map(str, args)], code or 0, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {module} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
