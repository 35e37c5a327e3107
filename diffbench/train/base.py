"""What training a model kind means: a :class:`Task` holds the kind's model, its training
inputs and its loss, and a preview for the model card; :data:`TASKS` holds one registered
class per kind (:mod:`diffbench.train.tasks`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from diffbench.io.config import ConfigError, TrainConfig
from diffbench.io.data import MNISTTensors, load_mnist
from diffbench.sampling import randn_like
from diffbench.sampling.schedule import NoiseSchedule

TASKS: dict[str, type[Task]] = {}
"""Model kind -> its task class."""


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.kind] = cls
    return cls


class Task:
    """One kind's model, training inputs and loss. Subclasses set ``kind`` and ``model_class``
    and provide :meth:`loss` and :meth:`preview`."""

    kind: ClassVar[str]
    model_class: ClassVar[type[nn.Module]]
    diffusion: ClassVar[bool] = False  # trained with an EMA, sampled in the preview

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        model_config = config.build_model_config()
        try:  # built on the CPU, so a failure here is the config's, never the device's
            model = self.model_class(model_config)
        except (ValueError, TypeError, IndexError, ZeroDivisionError) as error:
            raise ConfigError(f"model: {model_config} cannot be built ({error})") from error
        self.model = model.to(device)
        self.schedule = NoiseSchedule.from_name(config.schedule.name,
                                                config.schedule.num_timesteps)
        self.facts: dict[str, Any] = {}
        train = load_mnist("train", config.data_dir, limit=config.train_images)
        self.inputs = self.prepare(train.images).to(device)
        self.labels = train.labels.to(device)

    @property
    def uses_schedule(self) -> bool:
        return self.diffusion

    def prepare(self, images: Tensor) -> Tensor:
        """Digits -> what the model trains on (default: the digits themselves)."""
        return images

    def noised(
        self, batch: Tensor, max_timestep: int, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(x_t, t, eps) with t ~ U{0, .., max_timestep - 1} and eps ~ N(0, I) per example."""
        t = torch.randint(0, max_timestep, (len(batch),), generator=gen, device=gen.device)
        eps = randn_like(batch, gen)
        t = t.to(batch.device)
        return self.schedule.add_noise(batch, eps, t), t, eps

    def example_args(self, example: Tensor) -> tuple[Tensor, ...]:
        """Arguments of one forward call on ``example`` (for FLOPs and shape checks)."""
        return (example,)

    def loss(self, model: nn.Module, batch: Tensor, labels: Tensor, gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def preview(
        self, model: nn.Module, test: MNISTTensors, gen: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        """(images for the sample grid in [-1, 1], numbers for the model card)."""
        raise NotImplementedError

    def finish(self, model: nn.Module) -> None:
        """Anything to fix in the model before its last checkpoint (default: nothing)."""
