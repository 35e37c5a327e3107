"""The timestep plan of one image-to-image call: computed once per (strength, start) by a
sampler (:meth:`diffbench.sampling.Sampler.plan`) and read by everything that needs to know
where a translation starts and what it costs: the call itself, the start of the grid's noised
column, the noised accuracy, the NFE and FLOPs of a results row, the shards' cost, the peer.

Imports nothing from diffbench, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Plan:
    """Where one translation at ``strength`` starts, the timesteps it denoises, and its cost.

    ``timesteps``: what the network is called at, strictly decreasing, the first the start (VP:
    integer timesteps; flow: ``sigma * 1000``, float64). ``nfe``: network evaluations of the
    call (Heun's are two a step but the last). ``start_timestep``: the VP timestep the input is
    noised to; for a flow system the VP timestep of the same SNR (the currency its noised
    accuracy and the equal-SNR view are read in). ``start_sigma``: the flow sigma of the start
    (None on the VP path). ``start_snr``: the noised input's signal-to-noise ratio,
    ``ab_t / (1 - ab_t)`` on the VP path, ``((1 - s) / s)^2`` on the flow path.
    """

    strength: float
    start: str  # "exact" (the default everywhere) or "diffusers" (diffusers' pipelines)
    timesteps: Tensor
    nfe: int
    start_timestep: int
    start_snr: float
    start_sigma: float | None = None

    @property
    def steps(self) -> int:
        """Timesteps the call visits (fewer than :attr:`nfe` for a two-evaluation step)."""
        return len(self.timesteps)
