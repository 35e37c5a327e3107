"""Compiled variants of a translator's fixed-shape call: ``torch.compile`` and CUDA graphs.

* ``"compile"``: the networks (UNet; VAE encode and decode) go through ``torch.compile``
  (TorchInductor's fused kernels); on CUDA with ``mode="reduce-overhead"``, which also replays
  each network call as a CUDA graph. The sampler's per-step arithmetic stays eager.
* ``"cudagraphs"``: the whole call (encode, every denoising step, decode) is captured as one
  ``torch.cuda.CUDAGraph`` per (input shape, strength) and replayed, as in PyTorch's notes on
  CUDA graphs (warm up on a side stream, capture, then copy new inputs into the static ones and
  replay). It needs a CUDA device and a sampler that draws nothing after the initial noise
  (DDIM with eta = 0); the initial noise is drawn outside the graph from the caller's
  generator, so a seed gives the same output as in eager mode.

The first call of each new (input shape, strength) compiles or captures; those seconds go to
``compile_seconds``, never into a timed call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffbench.core.choices import COMPILE_MODES
from diffbench.core.errors import InputError
from diffbench.core.runtime import synchronize
from diffbench.sampling import DDIMSampler, Sampler

WARMUP_CALLS = 3  # reduce-overhead's CUDA-graph trees warm up, then record: three calls cover it

Call = Callable[[Tensor, Tensor, float, Any], Tensor]
"""``fn(x0, noise, strength, generator) -> x``: one translation with its initial noise given."""


def check_compile(mode: str | None, device: torch.device, sampler: Sampler) -> None:
    """Raise a ValueError unless ``mode`` can run on ``device`` with ``sampler``."""
    if mode is not None and mode not in COMPILE_MODES:
        raise InputError(
            f"unknown compile mode {mode!r}; allowed: None (eager), {', '.join(COMPILE_MODES)}"
        )
    if mode != "cudagraphs":
        return
    if device.type != "cuda":
        raise InputError(
            f"compile mode 'cudagraphs' needs a CUDA device, got {str(device)!r}; "
            f"allowed on {device.type}: None (eager), compile"
        )
    if not isinstance(sampler, DDIMSampler) or sampler.eta != 0.0:
        raise InputError(
            f"compile mode 'cudagraphs' captures a deterministic call; {sampler!r} draws noise "
            f"at every step; allowed: a DDIM sampler with eta=0"
        )


def compile_network(fn: Callable, device: torch.device) -> Callable:
    """``torch.compile(fn)``; on CUDA in ``reduce-overhead`` mode (CUDA graphs per call)."""
    return torch.compile(fn, mode="reduce-overhead" if device.type == "cuda" else "default")


class PreparedCall:
    """Runs ``fn``, preparing each new (shapes, strength) first with timed warm-up calls
    (``"compile"``) or a CUDA-graph capture (``"cudagraphs"``)."""

    def __init__(self, fn: Call, mode: str, device: torch.device) -> None:
        self.fn, self.mode, self.device = fn, mode, device
        self.compile_seconds = 0.0
        self._replays: dict[tuple, Callable[[Tensor, Tensor], Tensor] | None] = {}

    def __call__(self, x0: Tensor, noise: Tensor, strength: float, generator: Any) -> Tensor:
        key = (tuple(x0.shape), tuple(noise.shape), x0.dtype, strength)
        if key not in self._replays:
            start = time.perf_counter()
            self._replays[key] = self._prepare(x0, noise, strength, generator)
            synchronize(self.device)
            self.compile_seconds += time.perf_counter() - start
        replay = self._replays[key]
        return self.fn(x0, noise, strength, generator) if replay is None else replay(x0, noise)

    def _prepare(
        self, x0: Tensor, noise: Tensor, strength: float, generator: Any
    ) -> Callable[[Tensor, Tensor], Tensor] | None:
        if self.mode == "compile":
            for _ in range(WARMUP_CALLS):  # a copy of the generator: the caller's stays unused
                self.fn(x0, noise, strength, _copy(generator))
            return None
        return capture(self.fn, x0, noise, strength)


def capture(
    fn: Call, x0: Tensor, noise: Tensor, strength: float
) -> Callable[[Tensor, Tensor], Tensor]:
    """One CUDA graph of ``fn`` on static copies of ``x0`` and ``noise``; the returned
    ``replay(x0, noise)`` copies its inputs in, replays, and returns a copy of the output."""
    static_x0, static_noise = x0.clone(), noise.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # lazy initialisation (cuDNN plans, workspaces) happens here
        for _ in range(WARMUP_CALLS):
            fn(static_x0, static_noise, strength, None)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_x0, static_noise, strength, None)

    def replay(x0: Tensor, noise: Tensor) -> Tensor:
        static_x0.copy_(x0)
        static_noise.copy_(noise)
        graph.replay()
        return static_out.clone()

    return replay


def _copy(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is None:
        return None
    spare = torch.Generator(generator.device)
    spare.set_state(generator.get_state())
    return spare
