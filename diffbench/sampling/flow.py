"""The flow samplers' names: ``flow-euler``, ``flow-heun``, ``flow-dpmsolver++``.

Rectified flow needs no solver of its own: each is the solver of
:mod:`diffbench.sampling.solvers` on the flow path (:class:`~diffbench.sampling.paths.FlowPath`),
its network predicting the velocity ``eps - x0``. These names (labels ``RF-Euler``, ``RF-Heun``,
``RF-DPM++2M``) read flow networks only and are what a system keyed ``{prediction: flow,
sampler: euler}`` runs; ``shift`` is SD3's timestep shift (Esser et al. 2024; SD3 uses 3).

Image-to-image (Esser et al. 2024's SD3 img2img; diffusers' ``StableDiffusion3Img2ImgPipeline``):
``start="diffusers"`` takes the last ``n - int(n - n * strength)`` of the n sigmas, so the start
depends on n (0.3 at n = 10 starts at sigma 0.3007); ``start="exact"`` starts at exactly
``sigma = strength`` with ``max(1, int(n * strength))`` steps over the grid diffusers would use
had its schedule begun at the strength. No x0 clipping: diffusers' flow schedulers have none.
"""

from __future__ import annotations

from diffbench.sampling.base import Sampler
from diffbench.sampling.prediction import FLOW_PREDICTIONS
from diffbench.sampling.registry import register_sampler
from diffbench.sampling.solvers import DPMSolverPlusPlusSampler, EulerSampler, HeunSampler


def flow_version(solver: type[Sampler], name: str, label: str) -> type[Sampler]:
    """``solver`` registered as ``name``, reading flow networks only (no new step)."""
    version = type(f"Flow{solver.__name__}", (solver,), {
        "__doc__": f"{solver.__name__} on the rectified-flow path (see :mod:`{__name__}`).",
        "__module__": __name__,
        "predictions": FLOW_PREDICTIONS[:1],  # the velocity networks (not the one-step ones)
        "default_prediction": "flow",
    })
    return register_sampler(name, label)(version)


FlowEulerSampler = flow_version(EulerSampler, "flow-euler", "RF-Euler")
FlowHeunSampler = flow_version(HeunSampler, "flow-heun", "RF-Heun")
FlowDPMSolverPlusPlusSampler = flow_version(DPMSolverPlusPlusSampler, "flow-dpmsolver++",
                                            "RF-DPM++2M")
