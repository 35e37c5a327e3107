"""Shared test fixtures: the shipped MNIST folder, tiny checkpoints, hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST that ships in fixtures/mnist/: the official test split and the first 10,000
    official training digits (what `--data-dir` tests point at; no test depends on more)."""
    return REPO / "fixtures" / "mnist"


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Path:
    """Random-init checkpoints of every model, tiny, in the layout `diffbench train` writes."""
    import torch

    from diffbench.io.checkpoints import model_metadata, save_checkpoint
    from diffbench.models import (
        VAE,
        Classifier,
        ClassifierConfig,
        UNet,
        UNetConfig,
        VAEConfig,
        model_stats,
    )

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_checkpoints")
    x, z, t = torch.zeros(1, 1, 28, 28), torch.zeros(1, 4, 7, 7), torch.zeros(1, dtype=torch.long)
    classifier = ClassifierConfig(channels=(8, 16), num_groups=4)
    noise_aware = {**classifier.__dict__, "noise_aware": True}
    models = {
        "pixel": (UNet(UNetConfig(base_channels=8)), (x, t)),
        "latent": (
            UNet(UNetConfig(in_channels=4, image_size=7, base_channels=8, channel_mults=(1, 2))),
            (z, t),
        ),
        # rectified-flow siblings (diffbench.sampling.flow), metadata prediction "flow"
        "pixel_flow": (UNet(UNetConfig(base_channels=8)), (x, t)),
        "latent_flow": (
            UNet(UNetConfig(in_channels=4, image_size=7, base_channels=8, channel_mults=(1, 2))),
            (z, t),
        ),
        # the one-step networks tuned from them (diffbench.sampling.one_step); MeanFlow's with
        # its second time input
        "pixel_consistency": (UNet(UNetConfig(base_channels=8)), (x, t)),
        "latent_consistency": (
            UNet(UNetConfig(in_channels=4, image_size=7, base_channels=8, channel_mults=(1, 2))),
            (z, t),
        ),
        "pixel_meanflow": (UNet(UNetConfig(base_channels=8, interval_time=True)), (x, t)),
        "latent_meanflow": (
            UNet(UNetConfig(in_channels=4, image_size=7, base_channels=8, channel_mults=(1, 2),
                            interval_time=True)),
            (z, t),
        ),
        "vae": (VAE(VAEConfig(base_channels=8)), (x,)),
        "classifier": (Classifier(classifier), (x,)),
        "noisy_classifier": (Classifier(ClassifierConfig(**noise_aware)), (x, t)),
        # scaled VAE latents z_t [B, 4, 7, 7] and t (see
        # diffbench.measure.metrics.NOISY_CLASSIFIERS)
        "latent_noisy_classifier": (
            Classifier(ClassifierConfig(**{**noise_aware, "in_channels": 4})), (z, t)
        ),
    }
    for name, (model, example) in models.items():
        for parameter in model.parameters():  # zero-initialised output layers would hide bugs
            if not parameter.any():
                torch.nn.init.normal_(parameter, std=0.02)
        metadata = {
            **model_metadata(model),
            "kind": "classifier" if "classifier" in name else name.split("_")[0],
            "name": name,
            "stats": model_stats(model, *example).as_dict(),
            "schedule": {"name": "linear", "num_timesteps": 1000},
            "train_seconds": 1.5,
            "cpu_seconds": 1.25,
            "step": 0,
            **({"prediction": name.split("_")[1]}
               if name.endswith(("_flow", "_consistency", "_meanflow")) else {}),
        }
        save_checkpoint(directory / f"{name}.safetensors", model.state_dict(), metadata)
    return directory
