"""Stopping signals taken at safe points while worker threads run.

Why: Python raises a signal's exception (KeyboardInterrupt for Ctrl-C, or what a handler such as
`atomicio.exit_on_signals`'s raises) at whatever bytecode the main thread is running. In a thread
pool's own bookkeeping that can be the moment after `with lock:` took its lock and before the block
began (CPython gh-74174): the lock stays held, the next worker to take it waits forever, and so does
the pool's shutdown. A merge stopped by Ctrl-C hung that way (`_idle_semaphore` of
`ThreadPoolExecutor.submit`). Inside `deferred_signals()` the handlers only note the signal; the work
loop calls `check()` where it holds no lock, and the handler that was there before runs then, so the
usual exception unwinds from a safe place. A second signal stops the process at once, the default way
(so a stuck run can still be stopped).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SIGNAL_POLL_SECONDS = 0.25  # how long a main thread waiting on workers goes without looking for a signal


def _default_action(signum: int) -> None:
    """What the signal does with no handler (ends the process, for these three)."""
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


class DeferredSignals:
    """The stopping signals noted while active; `check()` hands the first to the handler it displaced."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._delivered = False
        self._pid = os.getpid()

    def _deliver(self, signum: int, frame) -> None:
        """What the displaced handler does: raise (Python's handlers), or the default action."""
        handler = self._previous.get(signum, signal.SIG_DFL)
        outer = getattr(handler, "__self__", None)
        if isinstance(outer, DeferredSignals):  # nested: this safe point is safe for the outer one too
            outer.signum, outer._delivered = signum, True
            outer._deliver(signum, frame)
            return
        if callable(handler):
            handler(signum, frame)
            return
        _default_action(signum)

    def _note(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # in a worker process forked meanwhile: as if not deferred
            self._deliver(signum, frame)
            return
        if self.signum is not None:  # the second one: at once, the default way
            _default_action(signum)
            return
        self.signum = signum
        log.warning(
            "%s received: stopping once the work in hand is done (send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers belong to the main thread; elsewhere signals keep their usual effect
        for signum in STOPPING_SIGNALS:
            current = signal.getsignal(signum)
            if current is None or current is signal.SIG_IGN:  # not Python's, or ignored (nohup): leave it
                continue
            self._previous[signum] = current
            signal.signal(signum, self._note)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def check(self) -> None:
        """Run the displaced handler for a noted signal (it raises, or the default action ends the process)."""
        if self.signum is None or self._delivered:
            return
        self._delivered = True
        self._deliver(self.signum, None)


@contextlib.contextmanager
def deferred_signals() -> Iterator[DeferredSignals]:
    """Note SIGINT/SIGTERM/SIGHUP instead of raising mid-bytecode; the body calls `check()` at safe points.

    A signal noted after the body's last check is delivered on leaving, so none is lost.
    """
    stop = DeferredSignals()
    stop.install()
    try:
        yield stop
        stop.check()
    finally:
        stop.restore()
