"""A latent-space task's data: the trained VAE it encodes with, and the digits' latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffbench.core.system import to_latent
from diffbench.io.checkpoints import load_metadata, load_model
from diffbench.io.config import ConfigError, TrainConfig
from diffbench.models import VAE


def load_vae(path: str | Path, device: torch.device | str = "cpu") -> VAE:
    """A trained VAE from its checkpoint, in eval mode."""
    vae, metadata = load_model(path, device)
    if metadata.get("kind") != "vae":
        raise ConfigError(f"{path} is a {metadata.get('kind')!r} checkpoint, not a VAE")
    return vae


@torch.inference_mode()
def encode_with_vae(
    config: TrainConfig, images: Tensor, device: torch.device
) -> tuple[Tensor, dict[str, Any]]:
    """Latents (posterior mean x the VAE's scale factor) of ``images``, and the VAE's facts."""
    if not config.vae_checkpoint:
        raise ConfigError(f"{config.kind} in latent space needs vae_checkpoint: the trained VAE "
                          f"to encode with")
    vae = load_vae(config.vae_checkpoint, device)
    latents = torch.cat([to_latent(vae, chunk.to(device)) for chunk in images.split(1024)])
    facts = {
        "vae_checkpoint": str(config.vae_checkpoint),
        "vae_train_seconds": load_metadata(config.vae_checkpoint).get("train_seconds"),
        "latent_shape": list(vae.latent_shape),
    }
    return latents.cpu(), facts
