"""The training loop, one for every kind, DDP under torchrun.

Every run uses AdamW with linear warm-up then cosine decay (Loshchilov & Hutter 2017/2019),
gradient-norm clipping, bf16 autocast on CUDA, and for diffusion models an EMA of the weights
(used at inference; Ho et al. 2020, appendix B). Under ``torchrun`` each process trains on its
own shard of the data; only rank 0 logs to MLflow (with system metrics) and writes files.

Interruptions lose at most the step in flight: checkpoints are written atomically, and in a
single process SIGINT or SIGTERM lets the current step finish, saves it and raises
:class:`~diffbench.train.signals.TrainingInterrupted` (``--resume`` continues from there, and
continues the MLflow run whose id the training state holds: one loss curve, one run).
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import save_image
from tqdm.auto import tqdm

from diffbench.core.environment import environment_facts
from diffbench.core.files import check_writable_dir, write_atomic_text
from diffbench.core.outputs import refuse_earlier_run
from diffbench.core.runtime import Distributed, init_distributed, resolve_device, synchronize
from diffbench.io.checkpoints import load_metadata, model_metadata
from diffbench.io.config import ConfigError, TrainConfig
from diffbench.io.data import load_mnist, mnist_files, resolve_data_dir
from diffbench.models import model_stats
from diffbench.results.mlflow_runs import log_dataset
from diffbench.results.tracking import start_run, time_execution
from diffbench.train.recipe import (
    batch_indices,
    frozen_copy,
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
    restore_training,
    save_training,
)
from diffbench.train.tasks import build_task

LOG = logging.getLogger(__name__)


def train(
    config: TrainConfig, resume: bool = False, stop_at: int | None = None, command: str = "",
    overwrite: bool = False,
) -> Path:
    """Train ``config.kind`` for ``config.steps`` steps (stopping early after ``stop_at``,
    checkpointed, as an interruption would) and return the inference checkpoint's path. A
    checkpoint of the same name already in ``config.out`` is refused unless ``resume`` or
    ``overwrite``."""
    device = resolve_device(config.device)
    check_writable_dir(config.out)
    weights, state, _ = checkpoint_paths(config)
    refuse_earlier_run(config.out, [weights, state], overwrite=overwrite, resume=resume,
                       resumable=True)
    ddp, device = init_distributed(device)
    threads = torch.get_num_threads()
    if config.threads is not None:  # this run's threads; the caller's come back afterwards
        torch.set_num_threads(config.threads)
    try:
        run = prepare_run(config, device, ddp, resume, command)
        end = min(config.steps, stop_at or config.steps)
        if not ddp.is_main:
            fit(run, end)
            return checkpoint_paths(config)[0]
        with start_run(config.experiment, run_name=run.metadata["name"],
                       params=config.model_dump(), log_system_metrics=True,
                       tags={"kind": config.kind, "resumed": str(resume)},
                       run_id=run.metadata.get("mlflow_run_id")) as tracker:  # --resume's
            run.tracker = tracker
            if tracker.run_id is not None:  # saved with the state: a resume continues it
                run.metadata["mlflow_run_id"] = tracker.run_id
            log_dataset(tracker, "mnist-train", "train", config.data_dir, config.train_images,
                        "training")
            tracker.log_params({f"model.{k}": v for k, v in run.metadata["stats"].items()})
            with graceful_stop(enabled=ddp.world_size == 1) as received:
                run.stop_signals = received
                fit(run, end)
            return finish(run)
    finally:
        torch.set_num_threads(threads)
        if ddp.world_size > 1:
            dist.destroy_process_group()


def prepare_run(
    config: TrainConfig, device: torch.device, ddp: Distributed, resume: bool, command: str
) -> Run:
    """Model, EMA, optimizer and metadata, restored from the training state on ``resume``."""
    torch.manual_seed(config.seed)
    task = build_task(config, device)
    model = task.model
    trainable: nn.Module = model
    if ddp.world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        trainable = DistributedDataParallel(model, device_ids=device_ids)
    try:
        stats = model_stats(model, *task.example_args(task.inputs[:2]))
    except torch.OutOfMemoryError:
        raise
    except (ValueError, RuntimeError, IndexError) as error:  # shapes the config cannot take
        raise ConfigError(f"model: {model.cfg} does not run on this data ({error})") from error
    metadata = {
        "name": checkpoint_paths(config)[0].stem,
        "kind": config.kind,
        **model_metadata(model),
        "schedule": config.schedule.model_dump() if task.uses_schedule else None,
        "config": config.model_dump(),
        "command": command,
        "device": device.type,
        "world_size": ddp.world_size,
        "stats": stats.as_dict(),
        "dataset_md5": {  # the MNIST files this run read: its training digits, its test digits
            Path(path).name: md5 for path, md5 in {
                **mnist_files("train", config.data_dir, config.train_images),
                **mnist_files("test", config.data_dir),
            }.items()
        },
        "data_dir": str(resolve_data_dir(config.data_dir)),
        "environment": environment_facts(),
        **task.facts,
    }
    run = Run(
        task=task,
        model=model,
        trainable=trainable,
        ema=frozen_copy(model) if task.diffusion else None,
        optimizer=torch.optim.AdamW(model.parameters(), lr=config.lr,
                                    weight_decay=config.weight_decay),
        progress=Progress(),
        ddp=ddp,
        device=device,
        metadata=metadata,
    )
    if resume:
        restore_training(run)
    return run


@time_execution(name="train")
def fit(run: Run, end: int) -> None:
    """Epochs until step ``end``, or until the run's time or CPU budget is spent."""
    config = run.task.config
    bar = tqdm(total=end, initial=run.progress.step, disable=not run.ddp.is_main, desc=config.kind)
    per_epoch = steps_per_epoch(len(run.task.inputs), config.batch_size, run.ddp.world_size)
    while run.progress.step < end and not out_of_time(run) and not run.stop_signals:
        run_epoch(run, min(end, (run.progress.step // per_epoch + 1) * per_epoch), bar)
    bar.close()
    if run.stop_signals:
        if run.ddp.is_main:
            save_training(run)
        raise TrainingInterrupted(run.stop_signals[0], run.progress.step,
                                  checkpoint_paths(config)[1])


def out_of_time(run: Run) -> bool:
    config, progress = run.task.config, run.progress
    return (config.time_budget_s is not None and progress.train_seconds >= config.time_budget_s
            or budget_used(run) >= 1.0)


def step_clock(run: Run, wall: float, cpu: float) -> tuple[float, float]:
    """A step's (wall, CPU) seconds; under torchrun the slowest rank's wall time and the CPU
    time of all ranks, all-reduced, so every rank counts the same budget and stops at the same
    step."""
    if run.ddp.world_size == 1:
        return wall, cpu
    clock = torch.tensor([wall, cpu], dtype=torch.float64, device=run.device)
    slowest, total = clock[:1].clone(), clock[1:].clone()
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(slowest), float(total)


def budget_used(run: Run) -> float:
    """The share of ``cpu_budget_s`` the training steps have used (0 without a budget)."""
    budget = run.task.config.cpu_budget_s
    return run.progress.cpu_seconds / budget if budget else 0.0


def train_step(run: Run, index: Tensor, generator: torch.Generator) -> Tensor:
    """One optimizer step on the examples ``index``: learning rate for the step, loss (bf16
    autocast on CUDA), backward, gradient clipping, AdamW, EMA. Returns the loss."""
    task, config, step = run.task, run.task.config, run.progress.step
    for group in run.optimizer.param_groups:
        group["lr"] = config.lr * learning_rate_factor(step, config, budget_used(run))
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if run.device.type == "cuda" else nullcontext()
    )
    task.progress = max(step / config.steps, budget_used(run))
    with autocast:
        loss = task.loss(run.trainable, task.inputs[index], task.labels[index], generator)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    if run.ema is not None:
        update_ema(run.ema, run.model, config.ema_decay, step)
    return loss


@time_execution(name="epoch")
def run_epoch(run: Run, epoch_end: int, bar: tqdm) -> None:
    """Steps up to ``epoch_end`` (the end of this pass over the shard, or of the run)."""
    task, progress, config = run.task, run.progress, run.task.config
    window_start, window_images = time.perf_counter(), 0
    run.trainable.train()
    while progress.step < epoch_end and not out_of_time(run) and not run.stop_signals:
        step_start, cpu_start = time.perf_counter(), time.process_time()
        index = batch_indices(len(task.inputs), config, run.ddp, progress.step, run.device)
        generator = step_generator(config.seed, run.ddp.rank, progress.step, run.device)
        loss = train_step(run, index, generator)
        synchronize(run.device)  # the clock (and time_budget_s) counts the GPU's work too
        progress.step += 1
        wall, cpu = step_clock(run, time.perf_counter() - step_start,
                               time.process_time() - cpu_start)
        progress.train_seconds += wall
        progress.cpu_seconds += cpu
        window_images += len(index) * run.ddp.world_size
        bar.update(1)
        if progress.step % config.log_every == 0 or progress.step == epoch_end:
            progress.last_loss = loss.item()
            progress.images_per_second = window_images / (time.perf_counter() - window_start)
            bar.set_postfix(loss=f"{progress.last_loss:.4f}",
                            img_s=f"{progress.images_per_second:.0f}")
            if run.tracker is not None:
                run.tracker.log_metrics({"loss": progress.last_loss,
                                         "images_per_second": progress.images_per_second,
                                         "lr": run.optimizer.param_groups[0]["lr"]},
                                        step=progress.step)
            window_start, window_images = time.perf_counter(), 0
        if run.ddp.is_main and progress.step % config.checkpoint_every == 0:
            save_training(run)


@time_execution(name="sample")
@torch.inference_mode()
def sample_grid(run: Run, path: Path) -> dict[str, Any]:
    """The task's preview as a PNG, plus its numbers for the model card."""
    task, model = run.task, run.inference_model
    test = load_mnist("test", task.config.data_dir, limit=1000)
    model.eval()
    images, extra = task.preview(model, test, torch.Generator().manual_seed(task.config.seed))
    model.train()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, path, nrow=8)
    return extra


def finish(run: Run) -> Path:
    """Last checkpoint, sample grid and model card, the latter two logged as artifacts."""
    config = run.task.config
    run.task.finish(run.model)
    save_training(run)
    weights_path, _, card_path = checkpoint_paths(config)
    grid_path = weights_path.with_name(f"{weights_path.stem}_samples.png")
    extra = sample_grid(run, grid_path)
    write_atomic_text(card_path, model_card(load_metadata(weights_path), extra))
    if run.tracker is not None:
        run.tracker.log_metrics({k: v for k, v in extra.items() if isinstance(v, int | float)})
        run.tracker.log_metrics({"train_seconds": run.progress.train_seconds,
                                 "cpu_seconds": run.progress.cpu_seconds})
        for path in (card_path, grid_path):
            run.tracker.log_artifact(path)
    LOG.info("wrote %s (step %d, %.1f s)", weights_path, run.progress.step,
             run.progress.train_seconds)
    return weights_path
