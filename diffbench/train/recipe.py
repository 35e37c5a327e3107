"""The training recipe every kind shares: batch order, per-step generators, the learning-rate
schedule and the EMA of the weights.

Reproducible and exactly resumable without saving RNG streams: the batch order comes from a
permutation seeded by (seed, epoch) and every other random draw of step ``s`` on rank ``r`` from
a generator seeded by (seed, r, s).
"""

from __future__ import annotations

import copy
import functools
import math

import torch
from torch import Tensor, nn

from diffbench.core.runtime import Distributed
from diffbench.io.config import ConfigError, TrainConfig


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """The generator for every random draw of one step on one rank; the global RNG (dropout)
    is reseeded from the same number."""
    step_seed = ((seed * 1_000_003 + rank) * 1_000_003 + step) % 2**63  # within torch's range
    torch.manual_seed(step_seed)
    generator = torch.Generator(device)
    generator.manual_seed(step_seed)
    return generator


@functools.lru_cache(maxsize=2)
def _epoch_permutation(num_examples: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    """The (seed, epoch) order, drawn on the CPU (the same on every device) and copied to
    ``device`` once per epoch, so no step copies its batch indices from pageable host memory."""
    generator = torch.Generator().manual_seed(seed * 7919 + epoch)
    return torch.randperm(num_examples, generator=generator).to(device)


def steps_per_epoch(num_examples: int, batch_size: int, world_size: int) -> int:
    per_epoch = num_examples // world_size // batch_size
    if per_epoch < 1:
        raise ConfigError(
            f"batch_size {batch_size} x {world_size} process(es) exceeds the {num_examples} "
            f"training examples; lower batch_size or raise train_images"
        )
    return per_epoch


def batch_indices(
    num_examples: int, config: TrainConfig, ddp: Distributed, step: int,
    device: torch.device | str = "cpu",
) -> Tensor:
    """This rank's batch for ``step`` on ``device``: a slice of its shard of the (seed, epoch)
    permutation."""
    per_epoch = steps_per_epoch(num_examples, config.batch_size, ddp.world_size)
    epoch, position = divmod(step, per_epoch)
    order = _epoch_permutation(num_examples, config.seed, epoch, torch.device(device))
    shard = order[ddp.rank :: ddp.world_size]
    return shard[position * config.batch_size : (position + 1) * config.batch_size]


def learning_rate_factor(step: int, config: TrainConfig, budget_used: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` (Loshchilov & Hutter 2017)
    over the run's progress: the further of ``step`` towards ``config.steps`` and
    ``budget_used``, the share of ``cpu_budget_s`` spent, so the schedule completes whichever
    ends the run."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    progress = max(progress, budget_used)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema <- decay' ema + (1 - decay') model, decay' = min(decay, (1 + step) / (10 + step))
    (the warm-up of TensorFlow's ExponentialMovingAverage, so short runs are not stuck at init)."""
    decay = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy to hold the EMA weights: no gradients, eval mode."""
    return copy.deepcopy(model).requires_grad_(False).eval()
