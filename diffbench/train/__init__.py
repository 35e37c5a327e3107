"""Training: pixel UNet, VAE, latent UNet, classifiers and the diffusers peer; one loop, DDP
under torchrun.

* :mod:`~diffbench.train.base`: what a task is (model, data, loss, preview, card facts) and
  the registry of kinds; :mod:`~diffbench.train.latents`: the VAE a latent task encodes with;
* :mod:`~diffbench.train.tasks`: one registered class per model kind — a new kind goes there;
* :mod:`~diffbench.train.recipe`: batch order, per-step generators, LR schedule, EMA;
* :mod:`~diffbench.train.state`: checkpoint paths, saving, ``--resume``, the model card;
* :mod:`~diffbench.train.signals`: SIGINT and SIGTERM finish the step, save it, and stop;
* :mod:`~diffbench.train.loop`: the loop itself (DDP, MLflow).

Device and process-group setup live in :mod:`diffbench.core.runtime`, which jobs and benches import
without importing training.
"""

from diffbench.core.runtime import Distributed, init_distributed, resolve_device
from diffbench.train.base import Task
from diffbench.train.latents import encode_with_vae, load_vae
from diffbench.train.loop import (
    fit,
    prepare_run,
    run_epoch,
    train,
    train_step,
)
from diffbench.train.recipe import (
    batch_indices,
    learning_rate_factor,
    step_generator,
    steps_per_epoch,
    update_ema,
)
from diffbench.train.signals import TrainingInterrupted, graceful_stop
from diffbench.train.state import (
    Progress,
    Run,
    checkpoint_paths,
    model_card,
    training_budget_rows,
)
from diffbench.train.tasks import TASKS, build_task

__all__ = [
    "TASKS", "Distributed", "Progress", "Run", "Task", "TrainingInterrupted", "batch_indices",
    "build_task", "checkpoint_paths", "encode_with_vae", "fit", "graceful_stop",
    "init_distributed", "learning_rate_factor", "load_vae", "model_card", "prepare_run",
    "resolve_device", "run_epoch", "step_generator", "steps_per_epoch", "train", "train_step",
    "training_budget_rows", "update_ema",
]
