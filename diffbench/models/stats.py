"""Model size and cost: parameter count and forward FLOPs per image, counted by PyTorch's
``torch.utils.flop_counter.FlopCounterMode`` (matmul / conv / attention FLOPs, 2 per multiply-add).
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelStats:
    parameters: int
    flops_per_image: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def flops_per_image(fn: Callable[..., Any], *example_inputs: torch.Tensor) -> int:
    """FLOPs of ``fn(*example_inputs)`` divided by the batch size (first dim of the first
    input)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        fn(*example_inputs)
    return counter.get_total_flops() // example_inputs[0].shape[0]


def model_stats(model: nn.Module, *example_inputs: torch.Tensor) -> ModelStats:
    """Count ``model``'s parameters and the FLOPs per image of ``model(*example_inputs)``."""
    return ModelStats(
        parameters=sum(p.numel() for p in model.parameters()),
        flops_per_image=flops_per_image(model, *example_inputs),
    )
