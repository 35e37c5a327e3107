"""A system's networks: the shipped checkpoints of a space and prediction (the VAE's too in
latent space), or a plug-in model factory (``"package.module:factory"`` or an installed model
name); with the noise schedule the checkpoint records and the training facts a results row
reports."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.core.plugins import model_factory
from diffbench.core.system import IMAGE_SHAPE
from diffbench.io.checkpoints import load_model, require_metadata
from diffbench.models.diffusers_unet import is_unet_folder, load_unet_folder
from diffbench.sampling.schedule import NoiseSchedule

PLUGIN_MODEL = (
    "a plug-in model is 'package.module:factory' (or the name of a model an installed package "
    "declares in the diffbench.models entry-point group) naming a callable that returns a "
    "torch.nn.Module model(x_t, t) -> eps, with t a LongTensor [B] and eps shaped like x_t; "
    "or a folder saved by diffusers' UNet2DModel.save_pretrained"
)


def load_plugin_model(
    factory: str | Callable[[], Any], shape: tuple[int, ...], device: torch.device
) -> torch.nn.Module:
    """The network a factory (its ``package.module:factory`` name, or a UNet2DModel folder)
    returns, checked with one call on ``shape`` inputs; a ValueError naming it and what a
    model must be otherwise."""
    label = factory if isinstance(factory, str) else getattr(factory, "__qualname__", factory)
    if is_unet_folder(factory):  # diffbench.models.diffusers_unet
        factory = functools.partial(load_unet_folder, factory)
    elif isinstance(factory, str):
        factory = model_factory(factory, PLUGIN_MODEL)
    if not callable(factory):
        raise InputError(f"model {label!r} is {factory!r}, not a callable; {PLUGIN_MODEL}")
    try:
        model = factory()
    except Exception as error:  # the user's code may fail in any way
        raise InputError(f"model {label!r} failed ({type(error).__name__}: {error}); "
                         f"{PLUGIN_MODEL}") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model {label!r} returned a {type(model).__name__}, not a "
                         f"torch.nn.Module; {PLUGIN_MODEL}")
    model = model.to(device).eval()
    x, t = torch.zeros(1, *shape, device=device), torch.zeros(1, dtype=torch.long, device=device)
    try:
        with torch.inference_mode():
            eps = model(x, t)
    except Exception as error:  # the user's code may fail in any way
        raise InputError(f"model {label!r} cannot be called on x_t {tuple(x.shape)} "
                         f"({type(error).__name__}: {error}); {PLUGIN_MODEL}") from None
    if not isinstance(eps, Tensor) or eps.shape != x.shape:
        got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
        raise InputError(f"model {label!r} returned {got} for x_t {tuple(x.shape)}; "
                         f"{PLUGIN_MODEL}")
    return model


def training_cpu_seconds(unet: dict[str, Any], vae: dict[str, Any] | None) -> float | None:
    """CPU-seconds the system's networks trained for (the VAE's and a tuned network's start
    included); None when a checkpoint predates the record."""
    parts = [unet.get("cpu_seconds")] + ([vae.get("cpu_seconds")] if vae is not None else [])
    if unet.get("init_from"):
        parts.append(unet["init_from"].get("cpu_seconds"))
    return None if None in parts else sum(parts)


@dataclass
class Networks:
    """What :func:`load_networks` loads: the UNet, the VAE (latent space) or None, the UNet's
    noise schedule, the facts a row reports, and the checkpoint files by name."""

    unet: torch.nn.Module
    vae: torch.nn.Module | None
    schedule: NoiseSchedule
    facts: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def load_networks(
    directory: Path, space: str, prediction: str, model: str | Callable[[], Any] | None,
    device: torch.device,
) -> Networks:
    """The networks of a ``space`` system from ``directory``: ``{space}.safetensors`` for an
    eps network, ``{space}_{prediction}.safetensors`` otherwise (its metadata must name that
    prediction), or ``model``'s network; ``vae.safetensors`` in latent space."""
    files = {"vae.safetensors": directory / "vae.safetensors"} if space == "latent" else {}
    vae, vae_metadata = (None, {})
    if space == "latent":
        vae, vae_metadata = load_model(files["vae.safetensors"], device)
        require_metadata(files["vae.safetensors"], vae_metadata, "train_seconds", "stats")
    if model is None:
        stem = space if prediction == "eps" else f"{space}_{prediction}"
        path = files[f"{stem}.safetensors"] = directory / f"{stem}.safetensors"
        unet, metadata = load_model(path, device)
        require_metadata(path, metadata, "train_seconds", "stats")
        if metadata.get("prediction", "eps") != prediction:
            raise InputError(f"{path} holds a network predicting "
                             f"{metadata.get('prediction', 'eps')!r}, not {prediction!r}")
    else:
        shape = tuple(vae.latent_shape) if vae is not None else IMAGE_SHAPE
        unet = load_plugin_model(model, shape, device)
        parameters = sum(p.numel() for p in unet.parameters())
        metadata = {"train_seconds": math.nan, "stats": {"parameters": parameters}}
    schedule = metadata.get("schedule") or {"name": "linear", "num_timesteps": 1000}
    facts = {
        "train_seconds": metadata["train_seconds"] + vae_metadata.get("train_seconds", 0.0),
        "train_cpu_seconds": training_cpu_seconds(metadata, vae_metadata if vae else None),
        "unet_parameters": metadata["stats"]["parameters"],
        "vae_parameters": vae_metadata["stats"]["parameters"] if vae is not None else 0,
    }
    return Networks(unet, vae, NoiseSchedule.from_name(schedule["name"],
                                                       schedule["num_timesteps"]), facts, files)
