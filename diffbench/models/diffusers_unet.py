"""A folder saved by diffusers' ``UNet2DModel.save_pretrained`` as a diffbench network.

``model: <folder>`` in a compare config loads the folder (its ``config.json`` names
``"_class_name": "UNet2DModel"``) and wraps it as ``model(x_t, t) -> eps`` (the output's
``.sample``). A model whose ``sample_size`` is 32 runs on MNIST's 28x28 as the peer does
(:mod:`diffbench.models.peer`): ``x_t`` padded by 2 pixels of background (-1), the output
cropped back; the padding is never noised, unlike the peer's, which pads before noising. Needs
the optional ``diffusers`` dependency (``pip install 'diffbench[parity]'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.models.peer import PAD, crop_from_peer, pad_to_peer

UNET_CLASS = "UNet2DModel"


def is_unet_folder(path: Any) -> bool:
    """Whether ``path`` is a folder holding a diffusers ``config.json``."""
    return isinstance(path, str | Path) and (Path(path) / "config.json").is_file()


class DiffusersUNet(nn.Module):
    """``eps_theta(x_t, t)`` from a diffusers ``UNet2DModel``: its ``.sample``, with 28x28
    inputs padded to a 32x32 model and cropped back."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        size = unet.config.sample_size
        self.size = size if isinstance(size, int) else size[-1]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.shape[-1] == self.size:
            return self.unet(x, t).sample
        if x.shape[-1] + 2 * PAD != self.size:
            raise InputError(f"a UNet2DModel of sample_size {self.size} cannot run on "
                             f"{x.shape[-1]}x{x.shape[-1]} inputs; allowed: {x.shape[-1]} or "
                             f"{x.shape[-1] + 2 * PAD} (padded by {PAD})")
        return crop_from_peer(self.unet(pad_to_peer(x), t).sample)


def load_unet_folder(path: str | Path) -> DiffusersUNet:
    """The ``UNet2DModel`` saved in ``path``, wrapped; an InputError when the folder holds
    another class or diffusers is missing."""
    config = json.loads((Path(path) / "config.json").read_text())
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name != UNET_CLASS:
        raise InputError(f"model folder {str(path)!r} holds a {name!r}, not a {UNET_CLASS} "
                         f"saved by save_pretrained")
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise InputError(f"model folder {str(path)!r} needs diffusers, which is not "
                         f"installed: pip install 'diffbench[parity]'") from None
    return DiffusersUNet(UNet2DModel.from_pretrained(str(path)))
