"""The example's model: diffbench's shipped pixel eps network, loaded as a user loads their own
trained network, behind the protocol ``model(x_t, t) -> eps``."""

from __future__ import annotations

from torch import nn

from diffbench.core.resources import checkpoints_dir
from diffbench.io.checkpoints import load_model


def pixel_network() -> nn.Module:
    """The shipped ``pixel.safetensors`` UNet (eps prediction, 1000 linear-schedule steps)."""
    network, _ = load_model(checkpoints_dir() / "pixel.safetensors")
    return network
