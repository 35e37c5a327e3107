"""The peer a user would reach for instead: diffusers' ``UNet2DModel`` on 32x32 padded MNIST.

Block channels 32-64-64, one ResNet block per level, no attention in the down and up blocks
(``DownBlock2D`` / ``UpBlock2D``; diffusers' default mid block keeps its one self-attention at
8x8): 1,062,497 parameters, the size class of diffbench's pixel UNet. MNIST's 28x28 digits
are padded by 2 pixels of background (-1) to the power-of-two size diffusers' down/up blocks
expect, the usual recipe (``transforms.Pad(2)`` before normalising). Needs the optional
``diffusers`` dependency (``pip install diffbench[parity]``).
"""

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

PAD = 2
"""Pixels of background added on each side: 28x28 -> 32x32."""


@dataclass(frozen=True)
class PeerConfig:
    """``UNet2DModel`` arguments that differ from diffusers' defaults."""

    sample_size: int = 32
    in_channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 32  # diffusers default


class PeerUNet(nn.Module):
    """eps_theta(x_t, t) on 32x32 inputs: a thin wrapper that returns the tensor, not the
    diffusers output dataclass, so diffbench's training loop can drive it."""

    def __init__(self, cfg: PeerConfig = PeerConfig()) -> None:
        super().__init__()
        try:
            from diffusers import UNet2DModel
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the diffusers peer needs diffusers: pip install 'diffbench[parity]'"
            ) from error
        self.cfg = cfg
        levels = len(cfg.block_out_channels)
        self.unet = UNet2DModel(
            sample_size=cfg.sample_size,
            in_channels=cfg.in_channels,
            out_channels=cfg.in_channels,
            block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_num_groups,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t).sample


def pad_to_peer(images: Tensor) -> Tensor:
    """28x28 digits in [-1, 1] -> 32x32, padded with background (-1)."""
    return F.pad(images, (PAD, PAD, PAD, PAD), value=-1.0)


def crop_from_peer(images: Tensor) -> Tensor:
    """32x32 peer images -> the 28x28 digit area."""
    return images[..., PAD:-PAD, PAD:-PAD]
