"""Neural networks of diffbench: UNet noise predictors, the KL autoencoder, the MNIST classifier."""

from diffbench.models.classifier import Classifier, ClassifierConfig
from diffbench.models.embedding import timestep_embedding
from diffbench.models.stats import ModelStats, model_stats
from diffbench.models.unet import UNet, UNetConfig
from diffbench.models.vae import VAE, VAEConfig

__all__ = [
    "VAE",
    "Classifier",
    "ClassifierConfig",
    "ModelStats",
    "UNet",
    "UNetConfig",
    "VAEConfig",
    "model_stats",
    "timestep_embedding",
]
