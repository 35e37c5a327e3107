"""Wall time of calls: `time_execution` times each call of a function and logs it as a
series to the open MLflow run (:func:`diffbench.results.tracking.start_run`), keeping every
duration in `timings`."""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

ACTIVE: list[Any] = []  # the open trackers (diffbench.results.tracking.Tracker), innermost last
_TIMINGS: defaultdict[str, list[float]] = defaultdict(list)


def _sync_cuda() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _record(name: str, seconds: float) -> None:
    _TIMINGS[name].append(seconds)
    if ACTIVE:
        ACTIVE[-1]._log_timing(name, seconds)


def time_execution(func: F | None = None, *, name: str | None = None) -> Any:
    """Time each call (CUDA synchronised); log ``time/<name>_s`` as a series to the active run.

    Use as ``@time_execution`` or ``@time_execution(name="epoch")``. Every duration is also kept
    in `timings()`; an exception still records the time and then propagates.
    """

    def decorate(fn: F) -> F:
        label = name or fn.__name__

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            _sync_cuda()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync_cuda()
                _record(label, time.perf_counter() - start)

        return timed  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def timings() -> dict[str, list[float]]:
    """Every duration recorded by `time_execution` in this process, by name (a copy)."""
    return {label: list(values) for label, values in _TIMINGS.items()}


def reset_timings() -> None:
    """Forget the recorded durations."""
    _TIMINGS.clear()
