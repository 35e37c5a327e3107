"""Stopping training by signal without losing a step: SIGINT or SIGTERM is recorded while a
step runs, the loop saves that step and raises :class:`TrainingInterrupted` (``--resume``
continues from there)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a completed step, which was checkpointed."""

    def __init__(self, signum: int, step: int, path: Path) -> None:
        self.signum, self.step, self.path = signum, step, path
        self.exit_status = 128 + signum  # the shell's convention for "stopped by signal N"
        super().__init__(
            f"training interrupted by {signal.Signals(signum).name} after step {step}; "
            f"checkpoint saved to {path}; continue with --resume"
        )


@contextlib.contextmanager
def graceful_stop(enabled: bool = True) -> Iterator[list[int]]:
    """While active, SIGINT and SIGTERM are only recorded in the yielded list (the loop checks
    it after each step); a second signal of a kind gets the previous handling at once."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    kinds = (signal.SIGINT, signal.SIGTERM)
    previous = {kind: signal.getsignal(kind) for kind in kinds}

    def record(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.signal(signum, previous[signum] or signal.SIG_DFL)
        LOG.warning("%s: finishing the current step, then saving a checkpoint (send it again "
                    "to stop at once)", signal.Signals(signum).name)

    for kind in kinds:
        signal.signal(kind, record)
    try:
        yield received
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler or signal.SIG_DFL)
