"""Work counts of one call: a speed signal that does not drift, at native speed.

Wall time on a shared machine moves with its neighbours, and at batch 1 two processes running
the same code differ by several percent for their whole life (``docs/regression_gate.md``).
The work a call does does not move: this counts, for one call,

* ``python_instructions``: the bytecode instructions the interpreter executes (``sys.settrace``
  with ``f_trace_opcodes``: CPython's per-opcode trace events), the sampler loop's and the
  modules' Python overhead, which dominates at batch 1;
* ``tensor_ops``: the ATen operators dispatched (a ``TorchDispatchMode``: the operators below
  autograd, the backward pass's included);
* ``tensor_bytes``: the bytes those operators write, so a larger tensor, or a wider dtype,
  counts as more.

Counts of the same code repeat exactly (the garbage collector is held off while counting), so
a change of more than ``LIMIT`` in any of them is the code's. They see work, not waiting or a
slower kernel for the same operator: the timed cases cover those.

This file imports nothing of ``diffbench``: ``diffbench ab``'s workers load it by path, so the
base and the head are counted by the same code (CPython 3.11 or later; its own frames are not
counted).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import Any

LIMIT = 0.01
"""A head whose count exceeds its base's by more than 1%, in any of the three, is slower."""
KINDS = ("python_instructions", "tensor_ops", "tensor_bytes")


def count(run: Callable[..., Any], setup: Callable[[], dict[str, Any]]) -> dict[str, int]:
    """The three counts of ``run(**setup())``, counted twice: the first count of a process also
    holds the counter's own first-use work (about 1.5% more bytecode), the second repeats
    exactly, in this process and in any other."""
    counted_once(run, setup())
    return counted_once(run, setup())


def counted_once(run: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, int]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    tally = dict.fromkeys(KINDS, 0)
    skip = {__file__, sys.modules[TorchDispatchMode.__module__].__file__}

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tally["tensor_ops"] += 1
            tally["tensor_bytes"] += sum(leaf.numel() * leaf.element_size()
                                         for leaf in tree_leaves(out)
                                         if isinstance(leaf, torch.Tensor))
            return out

    def trace(frame, event, arg):
        if frame.f_code.co_filename in skip:
            return None  # the counter's own frames are not the call's work
        frame.f_trace_opcodes = True
        if event == "opcode":
            tally["python_instructions"] += 1
        return trace

    gc.collect()
    gc.disable()
    try:
        with Ops():
            sys.settrace(trace)
            try:
                run(**kwargs)
            finally:
                sys.settrace(None)
    finally:
        gc.enable()
    return tally


def verdict(head: dict[str, int], base: dict[str, int]) -> tuple[str, dict[str, float]]:
    """(``slower`` / ``faster`` / ``same``, each count's head / base ratio): slower when any
    count rose by more than ``LIMIT``; faster when none rose and one fell by more."""
    ratios = {kind: head[kind] / base[kind] if base[kind] else float(head[kind] > 0) + 1.0
              for kind in KINDS}
    if any(r > 1 + LIMIT for r in ratios.values()):
        return "slower", ratios
    if any(r < 1 - LIMIT for r in ratios.values()):
        return "faster", ratios
    return "same", ratios
