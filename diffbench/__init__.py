"""diffbench: DDPM, DDIM and latent diffusion compared on MNIST image-to-image translation.

The names below load on first use (``from diffbench import DDIMSampler`` imports the sampling
package then), so importing a leaf module such as :mod:`diffbench.core.errors`, or running
``diffbench --help``, imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DDIMSampler": "diffbench.sampling",
    "DDPMSampler": "diffbench.sampling",
    "MNISTNotFoundError": "diffbench.io.data",
    "MNISTTensors": "diffbench.io.data",
    "SAMPLERS": "diffbench.sampling",
    "NoiseSchedule": "diffbench.sampling.schedule",
    "Sampler": "diffbench.sampling",
    "System": "diffbench.core.system",
    "load_mnist": "diffbench.io.data",
    "make_timesteps": "diffbench.sampling",
    "register_sampler": "diffbench.sampling",
    "Translator": "diffbench.systems.translate",
}
"""Each public name -> the module that defines it."""

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # found once; later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
