"""A training run's state and files: where its checkpoints go, what a run holds, saving and
``--resume``, and the model card.

Each save writes the inference weights (the EMA for diffusion models) and, separately, the full
training state (model, optimizer, EMA: ``*.state.safetensors``), both atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffbench.core.runtime import Distributed
from diffbench.io.checkpoints import load_checkpoint, save_checkpoint
from diffbench.io.config import ConfigError, TrainConfig
from diffbench.io.packed_state import pack_state, unpack_state
from diffbench.results.tracking import time_execution
from diffbench.train.base import Task


def checkpoint_paths(config: TrainConfig) -> tuple[Path, Path, Path]:
    """(inference weights, training state, model card) for this run."""
    out = Path(config.out)
    name = config.name or config.kind
    return out / f"{name}.safetensors", out / f"{name}.state.safetensors", out / f"{name}.md"


@dataclass
class Progress:
    step: int = 0
    train_seconds: float = 0.0  # wall clock of the training steps
    last_loss: float = float("nan")
    images_per_second: float = float("nan")
    cpu_seconds: float = 0.0  # CPU time of the training steps, all threads (time.process_time)


@dataclass
class Run:
    """Everything one training run holds while it goes."""

    task: Task
    model: nn.Module  # the module being optimised
    trainable: nn.Module  # ``model``, wrapped in DistributedDataParallel under torchrun
    ema: nn.Module | None  # diffusion models: the EMA weights used at inference
    optimizer: torch.optim.Optimizer
    progress: Progress
    ddp: Distributed
    device: torch.device
    metadata: dict[str, Any]
    tracker: Any = None  # a diffbench.results.tracking.Tracker on rank 0, else None
    stop_signals: list[int] = field(default_factory=list)  # SIGINT/SIGTERM received so far

    @property
    def inference_model(self) -> nn.Module:
        return self.ema if self.ema is not None else self.model


@time_execution(name="save_checkpoint")
def save_training(run: Run) -> None:
    """Write the inference weights (EMA for diffusion models) and the full training state."""
    weights_path, state_path, _ = checkpoint_paths(run.task.config)
    progress = run.progress
    facts = dict(run.metadata, step=progress.step, train_seconds=round(progress.train_seconds, 3),
                 cpu_seconds=round(progress.cpu_seconds, 3),
                 final_loss=progress.last_loss, images_per_second=progress.images_per_second)
    save_checkpoint(weights_path, run.inference_model.state_dict(), facts)
    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()}
    if run.ema is not None:
        state["ema"] = run.ema.state_dict()
    tensors, structure = pack_state(state)
    save_checkpoint(state_path, tensors, dict(facts, structure=structure))


def restore_training(run: Run) -> None:
    """Load model, EMA, optimizer, progress and the MLflow run id from the training state."""
    _, state_path, _ = checkpoint_paths(run.task.config)
    if not state_path.is_file():
        raise ConfigError(f"--resume: no training state at {state_path} to continue from")
    tensors, metadata = load_checkpoint(state_path, device=str(run.device))
    try:
        state = unpack_state(tensors, metadata["structure"])
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        if run.ema is not None:
            run.ema.load_state_dict(state["ema"])
    except torch.OutOfMemoryError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # load_state_dict's
        detail = " ".join(str(error).split())[:300]
        raise ConfigError(
            f"--resume: the training state {state_path} does not match this run's config "
            f"({type(error).__name__}: {detail}); resume with the config it was saved with"
        ) from error
    run.progress = Progress(metadata["step"], metadata["train_seconds"], metadata["final_loss"],
                            metadata["images_per_second"], metadata.get("cpu_seconds", 0.0))
    if metadata.get("mlflow_run_id"):  # the MLflow run the training continues
        run.metadata["mlflow_run_id"] = metadata["mlflow_run_id"]


def training_budget_rows(metadata: dict[str, Any]) -> list[str]:
    """The card's CPU-time rows: what the steps used, on how many threads, against the budget."""
    config = metadata["config"]
    if "cpu_seconds" not in metadata:  # a checkpoint from before CPU time was recorded
        return []
    threads = config.get("threads") or metadata.get("environment", {}).get("torch_threads", "?")
    rows = [f"| training CPU time | {metadata['cpu_seconds']:.1f} s ({threads} thread(s)) |"]
    start = metadata.get("init_from")
    if start and start.get("cpu_seconds") is not None:
        rows += [f"| started from | {start['name']} ({start['cpu_seconds']:.1f} CPU s; total "
                 f"{start['cpu_seconds'] + metadata['cpu_seconds']:.1f} s) |"]
    if config.get("cpu_budget_s"):
        completed = "the budget" if metadata["step"] < config["steps"] else "`steps`"
        rows += [f"| CPU budget | {config['cpu_budget_s']:g} s (run ended by {completed}; "
                 f"learning-rate schedule completed) |"]
    return rows


def model_card(metadata: dict[str, Any], extra: dict[str, Any]) -> str:
    """A Markdown model card: how to reproduce the checkpoint and what it measured."""
    stats = metadata["stats"]
    lines = [
        f"# {metadata['name']} ({metadata['kind']})",
        "",
        "Reproduce with:",
        "",
        "```bash",
        metadata["command"],
        "```",
        "",
        "| fact | value |",
        "| --- | --- |",
        *([f"| prediction | {metadata['prediction']} |"] if "prediction" in metadata else []),
        f"| steps | {metadata['step']} |",
        f"| training wall time | {metadata['train_seconds']:.1f} s |",
        *training_budget_rows(metadata),
        f"| device | {metadata['device']} ({metadata['environment'].get('cpu') or ''}) |",
        f"| processes | {metadata['world_size']} |",
        f"| parameters | {stats['parameters']:,} |",
        f"| FLOPs per image (forward) | {stats['flops_per_image']:,} |",
        f"| images per second (training) | {metadata['images_per_second']:.1f} |",
        f"| final loss | {metadata['final_loss']:.5f} |",
    ]
    lines += [f"| {key} | {value} |" for key, value in extra.items()]
    lines += ["", "Config:", "", "```json", json.dumps(metadata["config"], indent=2), "```", ""]
    return "\n".join(lines)
