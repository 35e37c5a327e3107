"""Neural networks of diffbench: UNet noise predictors, the KL autoencoder, the MNIST classifier,
and the diffusers peer UNet the benches compare against."""

from diffbench.models.classifier import Classifier, ClassifierConfig
from diffbench.models.embedding import timestep_embedding
from diffbench.models.peer import PeerConfig, PeerUNet
from diffbench.models.stats import ModelStats, flops_per_image, model_stats
from diffbench.models.unet import UNet, UNetConfig
from diffbench.models.vae import VAE, VAEConfig

MODEL_TYPES = {
    "UNet": (UNet, UNetConfig),
    "VAE": (VAE, VAEConfig),
    "Classifier": (Classifier, ClassifierConfig),
    "PeerUNet": (PeerUNet, PeerConfig),
}
"""Model class name -> (module, config dataclass), for rebuilding models from checkpoints."""

__all__ = [
    "MODEL_TYPES",
    "VAE",
    "Classifier",
    "ClassifierConfig",
    "ModelStats",
    "PeerConfig",
    "PeerUNet",
    "UNet",
    "UNetConfig",
    "VAEConfig",
    "flops_per_image",
    "model_stats",
    "timestep_embedding",
]
