"""Peak memory of one call: the most tensor memory it held at once, above what was allocated
before it started.

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` before the call (the caching allocator's exact tensor bytes; cached but
  free blocks are not counted).
* CPU: every allocation and free that torch's CPU allocator makes during the call, as
  ``torch.profiler`` records them with ``profile_memory=True``; the peak of their running sum in
  time order. Exact for tensors; memory that libraries allocate outside torch's allocator (e.g.
  oneDNN's private scratch buffers, Python objects) is not counted. Resident-set size was the
  alternative and is not used: glibc keeps freed pages, so after a warm-up call RSS hardly moves
  and ``ru_maxrss`` is a high-water mark of the whole process, not of one call.

The measured call is an extra one, never a timed one (the profiler slows it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from diffbench.core.runtime import synchronize

# Kineto, the profiler's backend, logs every start and stop (at its highest level, USDT = 5, and
# without a GPU an "ERROR" that it found none) to stderr; level 6 (past its last level) keeps it
# quiet unless the user set their own level.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

CUDA_METHOD = "cuda_max_memory_allocated"
CPU_METHOD = "torch_profiler_cpu_allocations"


def peak_memory(fn: Callable[[], Any], device: str | torch.device) -> dict[str, Any]:
    """``{"peak_memory_bytes": ..., "peak_memory_method": ...}`` of one call of ``fn`` on
    ``device`` (see the module docstring for what each method counts)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return {"peak_memory_bytes": int(peak), "peak_memory_method": CUDA_METHOD}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()
    return {"peak_memory_bytes": peak_of(allocations(prof)), "peak_memory_method": CPU_METHOD}


def allocations(prof: torch.profiler.profile) -> list[tuple[int, int]]:
    """(time ns, bytes: + allocated, - freed) of each CPU allocator event, in time order."""
    events = prof.profiler.kineto_results.events()
    return sorted((e.start_ns(), e.nbytes()) for e in events
                  if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))


def peak_of(changes: list[tuple[int, int]]) -> int:
    """The highest running sum of byte changes (0 when nothing was allocated)."""
    running = peak = 0
    for _, nbytes in changes:
        running += nbytes
        peak = max(peak, running)
    return peak
