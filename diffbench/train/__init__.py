"""Training: pixel UNet, VAE, latent UNet, classifiers and the diffusers peer; one loop, DDP
under torchrun.

* :mod:`~diffbench.train.tasks`: one registered class per model kind (model, data, loss,
  preview, card facts) — a new kind goes there;
* :mod:`~diffbench.train.recipe`: batch order, per-step generators, LR schedule, EMA;
* :mod:`~diffbench.train.state`: checkpoint paths, saving, ``--resume``, the model card;
* :mod:`~diffbench.train.loop`: the loop itself (signals, DDP, MLflow).

Device and process-group setup live in :mod:`diffbench.runtime`, which jobs and benches import
without importing training.
"""

from diffbench.runtime import Distributed, init_distributed, resolve_device
from diffbench.train.loop import (
    TrainingInterrupted,
    fit,
    graceful_stop,
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
from diffbench.train.state import (
    Progress,
    Run,
    checkpoint_paths,
    model_card,
    training_budget_rows,
)
from diffbench.train.tasks import TASKS, Task, build_task, encode_with_vae, load_vae

__all__ = [
    "TASKS", "Distributed", "Progress", "Run", "Task", "TrainingInterrupted", "batch_indices",
    "build_task", "checkpoint_paths", "encode_with_vae", "fit", "graceful_stop",
    "init_distributed", "learning_rate_factor", "load_vae", "model_card", "prepare_run",
    "resolve_device", "run_epoch", "step_generator", "steps_per_epoch", "train", "train_step",
    "training_budget_rows", "update_ema",
]
