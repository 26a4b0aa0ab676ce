"""Stopping a training run between steps, with nothing lost.

Inside ``graceful_stop()`` the first SIGINT (Ctrl-C) or SIGTERM (``kill``, a scheduler's pre-emption) asks the
loop to finish its step, write a checkpoint and stop; leaving the block then raises ``Interrupted``, and the same
command resumes after that step. A second signal acts at once, as it would without this. A signal the process
was started ignoring stays ignored, as Python leaves it (a non-interactive shell starts its background jobs with
SIGINT ignored, so that a Ctrl-C meant for the script does not reach them). Under ``torchrun`` the processes agree
on the request every step (one small collective), so all of them stop after the same step.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from hyperbagel.errors import Interrupted
from hyperbagel.training.distributed import any_rank

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop:
    """Tells the loop when to stop: after ``stop_after`` steps in all, or after a signal."""

    def __init__(self, stop_after: int | None = None):
        self.stop_after = stop_after
        self.signum: int | None = None  # the signal this process received
        self.signalled = False  # a signal to any process stopped the loop
        self.done = 0

    def due(self, done: int) -> bool:
        """After ``done`` steps in all: stop here? (A collective under ``torchrun``: every process calls it.)"""
        self.done = done
        if any_rank(self.signum is not None):
            self.signalled = True
            log.warning("stopping after step %d with a checkpoint (a second signal stops at once)", done)
            return True
        return self.stop_after is not None and done >= self.stop_after


@contextlib.contextmanager
def graceful_stop(stop_after: int | None = None) -> Iterator[Stop]:
    """Catch SIGINT and SIGTERM for the block (in the main thread, and unless ignored; elsewhere signals act as
    before) and raise ``Interrupted`` when the block ends after one (also after one that came too late for the
    loop to see: the work after the block would not be what was asked for)."""
    stop = Stop(stop_after)
    previous: dict[int, object] = {}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def received(signum: int, _frame) -> None:
        stop.signum = signum
        restore()  # the next one acts at once

    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, received)
    try:
        yield stop
    finally:
        restore()
    if stop.signalled or stop.signum is not None:
        raise Interrupted(stop.signum, stop.done)


def ignore_interrupts() -> None:
    """For helper processes of a loop (data loaders): Ctrl-C reaches the whole process group, and the loop, not
    its helpers, decides when to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
