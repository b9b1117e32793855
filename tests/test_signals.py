"""core.signals: a stopping signal is noted while worker threads run and raised at the caller's safe point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace

import pytest

from core.signals import deferred_signals
from tests.conftest import REPO, default_signals

pytestmark = pytest.mark.usefixtures(
    "ctrl_c_raises"
)  # SIGINT raises here even when pytest runs in the background


def test_a_signal_waits_for_the_check_then_raises_as_before():
    before = signal.getsignal(signal.SIGINT)
    reached = False
    with pytest.raises(KeyboardInterrupt), deferred_signals() as signals:
        signal.raise_signal(signal.SIGINT)
        reached = True  # not raised mid-bytecode
        assert signals.signum == signal.SIGINT
        signals.check()
        pytest.fail("check() did not raise")
    assert reached
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_after_the_last_check_is_delivered_on_leaving():
    with pytest.raises(KeyboardInterrupt), deferred_signals() as signals:
        signals.check()
        signal.raise_signal(signal.SIGINT)
    with deferred_signals() as signals:  # none noted: leaving raises nothing
        signals.check()


def test_nested_deferral_delivers_at_the_inner_safe_point():
    with pytest.raises(KeyboardInterrupt), deferred_signals() as outer, deferred_signals() as inner:
        signal.raise_signal(signal.SIGINT)
        assert outer.signum is None and inner.signum == signal.SIGINT
        inner.check()
    assert outer.signum == signal.SIGINT


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=default_signals,
    )


def test_a_second_signal_stops_at_once_the_default_way():
    proc = _run(
        """
        import signal
        from core.signals import deferred_signals
        with deferred_signals():
            signal.raise_signal(signal.SIGTERM)
            print("noted", flush=True)
            signal.raise_signal(signal.SIGTERM)
            print("still running", flush=True)
        """
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert proc.stdout == "noted\n"


def test_an_ignored_signal_stays_ignored_and_a_forked_worker_is_not_deferred():
    proc = _run(
        """
        import os, signal
        from core.signals import deferred_signals
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        with deferred_signals() as signals:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            pid = os.fork()
            if pid == 0:  # a pool's forked worker: Ctrl-C raises there as it always did
                try:
                    signal.raise_signal(signal.SIGINT)
                except KeyboardInterrupt:
                    os._exit(7)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            print("child", os.waitstatus_to_exitcode(status), "noted", signals.signum, flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "child 7 noted None\n"


def test_ctrl_c_stops_the_openai_backend_between_replies():
    """eval's openai backend: Ctrl-C drops the requests not yet sent and raises once those in flight end."""
    from PIL import Image

    from eval.backends.openai_backend import OpenAIBackend
    from tests.test_datagen_server import StandIn

    prompts = [SimpleNamespace(text=f"Find the object {k}.") for k in range(24)]
    images = [[Image.new("RGB", (28, 28), (k, 0, 0))] for k in range(24)]
    with StandIn(delay=0.1) as server:
        backend = OpenAIBackend("m", api_base=server.base, concurrency=2, timeout=30)
        timer = threading.Timer(0.45, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                backend.generate(prompts, images)
        finally:
            timer.join()
            backend.close()
        assert 0 < len(server.requests) < len(prompts)
