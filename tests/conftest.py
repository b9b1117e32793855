"""Shared fixtures: the two environments and a tiny Qwen2-VL built once per session.

The suite runs in the training environment (.venv). Code that needs vLLM runs
in .venv-eval through a subprocess; if that environment is missing the tests
that need it fail (they are not skipped: `make test` builds it first).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


@pytest.fixture(scope="session")
def tiny_family(tiny_model, tmp_path_factory):
    """A factory: the tiny random checkpoint of a family (seed 0), each built at most once per session
    (per xdist worker) and shared by every test that asks for it."""
    from demo.tiny_model import build_tiny_model

    built = {"qwen2-vl": tiny_model}
    root = tmp_path_factory.mktemp("tiny-families")

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(root / family, family=family, seed=0)
        return built[family]

    return get


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


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process during the test, as in a shell's foreground.

    Why: a runner started in the background hands pytest SIGINT ignored (see `default_signals`), and the
    in-process signal tests send SIGINT to the main thread on purpose.
    """
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tiny_model, eval_python, tmp_path_factory):
    """`vllm serve` of the tiny model (via its module entry point: the `vllm` script looks up a `vllm`
    distribution, and this one is named vllm-cpu); bounded wait, killed with its process group at the end.

    One per session: the eval openai-backend tests and the datagen teacher tests share it (a start
    costs about a minute here)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [
        eval_python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "4096",
        "--limit-mm-per-prompt",
        '{"image": 6}',
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 400
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"vllm serve exited {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(base + "/models", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"vllm serve not ready after 400 s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
