"""diffbench: DDPM, DDIM and latent diffusion compared on MNIST image-to-image translation."""

from diffbench.data import MNISTNotFoundError, MNISTTensors, load_mnist
from diffbench.sampling import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    Sampler,
    make_timesteps,
    register_sampler,
)
from diffbench.schedule import NoiseSchedule
from diffbench.system import System
from diffbench.translate import Translator

__version__ = "0.1.0"

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "MNISTNotFoundError",
    "MNISTTensors",
    "SAMPLERS",
    "NoiseSchedule",
    "Sampler",
    "System",
    "load_mnist",
    "make_timesteps",
    "register_sampler",
    "Translator",
]
