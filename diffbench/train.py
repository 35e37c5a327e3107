"""Training: pixel UNet, VAE, latent UNet, classifier and the diffusers peer, one loop, DDP
under torchrun.

Every run uses AdamW with linear warm-up then cosine decay (Loshchilov & Hutter 2017/2019),
gradient-norm clipping, bf16 autocast on CUDA, and for diffusion models an EMA of the weights
(used at inference; Ho et al. 2020, appendix B). Losses:

* pixel / latent / peer: the "simple" DDPM objective ||eps - eps_theta(x_t, t)||^2
  (Ho et al. eq. 14);
* vae: reconstruction MSE + ``kl_weight`` * KL(q(z|x) || N(0, I)) (Rombach et al. 2022, sec. 3);
* classifier: cross-entropy, on x_t at t < ``noise_max_timestep`` when noise-aware.

Reproducible and exactly resumable without saving RNG streams: the batch order comes from a
permutation seeded by (seed, epoch) and every other random draw of step ``s`` on rank ``r`` from
a generator seeded by (seed, r, s). Under ``torchrun`` each process trains on its own shard of
the data; only rank 0 logs to MLflow and writes files.

Interruptions lose at most the step in flight: checkpoints are written atomically, and in a
single process SIGINT or SIGTERM lets the current step finish, saves it and raises
:class:`TrainingInterrupted` (``--resume`` continues from there).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import save_image
from tqdm.auto import tqdm

from diffbench.checkpoints import (
    check_writable_dir,
    environment_facts,
    load_checkpoint,
    load_metadata,
    load_model,
    model_metadata,
    pack_state,
    save_checkpoint,
    unpack_state,
    write_atomic_text,
)
from diffbench.config import ConfigError, TrainConfig
from diffbench.data import load_mnist, mnist_files, resolve_data_dir
from diffbench.models import VAE, Classifier, PeerUNet, UNet, model_stats
from diffbench.models.peer import crop_from_peer, pad_to_peer
from diffbench.runtime import Distributed, init_distributed, resolve_device, synchronize
from diffbench.sampling import DDIMSampler, randn_like
from diffbench.schedule import NoiseSchedule
from diffbench.system import clip_sample, from_latent, to_latent
from diffbench.tracking import start_run, time_execution

MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "pixel": UNet,
    "latent": UNet,
    "vae": VAE,
    "classifier": Classifier,
    "peer": PeerUNet,
}
DIFFUSION_KINDS = ("pixel", "latent", "peer")


# -- small pieces ----------------------------------------------------------------------------


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a completed step, which was checkpointed."""

    def __init__(self, signum: int, step: int, path: Path) -> None:
        self.signum, self.step, self.path = signum, step, path
        self.exit_status = 128 + signum  # the shell's convention for "stopped by signal N"
        super().__init__(
            f"training interrupted by {signal.Signals(signum).name} after step {step}; "
            f"checkpoint saved to {path}; continue with --resume"
        )


@contextlib.contextmanager
def graceful_stop(enabled: bool = True) -> Iterator[list[int]]:
    """While active, SIGINT and SIGTERM are only recorded in the yielded list (the loop checks
    it after each step); a second signal of a kind gets the previous handling at once."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    kinds = (signal.SIGINT, signal.SIGTERM)
    previous = {kind: signal.getsignal(kind) for kind in kinds}

    def record(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.signal(signum, previous[signum] or signal.SIG_DFL)
        print(f"\n{signal.Signals(signum).name}: finishing the current step, then saving a "
              f"checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)

    for kind in kinds:
        signal.signal(kind, record)
    try:
        yield received
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler or signal.SIG_DFL)


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


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at ``config.steps``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema <- decay' ema + (1 - decay') model, decay' = min(decay, (1 + step) / (10 + step))
    (the warm-up of TensorFlow's ExponentialMovingAverage, so short runs are not stuck at init)."""
    decay = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


# -- what each kind trains on and how --------------------------------------------------------


@dataclass
class Task:
    """One kind's model, data and loss."""

    config: TrainConfig
    model: nn.Module
    inputs: Tensor
    labels: Tensor
    schedule: NoiseSchedule | None
    facts: dict[str, Any]

    @property
    def is_diffusion(self) -> bool:
        return self.config.kind in DIFFUSION_KINDS

    def loss(self, model: nn.Module, batch: Tensor, labels: Tensor, gen: torch.Generator) -> Tensor:
        kind = self.config.kind
        if kind in DIFFUSION_KINDS:
            x_t, t, eps = self.noised(batch, self.schedule.num_timesteps, gen)
            return F.mse_loss(model(x_t, t), eps)
        if kind == "vae":
            reconstruction, mean, logvar = model(batch, generator=gen)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
            return F.mse_loss(reconstruction, batch) + self.config.kl_weight * kl
        if self.config.noise_max_timestep:
            x_t, t, _ = self.noised(batch, self.config.noise_max_timestep, gen)
            return F.cross_entropy(model(x_t, t), labels)
        return F.cross_entropy(model(batch), labels)

    def noised(
        self, batch: Tensor, max_timestep: int, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(x_t, t, eps) with t ~ U{0, .., max_timestep - 1} and eps ~ N(0, I) per example."""
        t = torch.randint(0, max_timestep, (len(batch),), generator=gen, device=gen.device)
        eps = randn_like(batch, gen)
        t = t.to(batch.device)
        return self.schedule.add_noise(batch, eps, t), t, eps


def build_task(config: TrainConfig, device: torch.device) -> Task:
    model_config = config.build_model_config()
    try:  # built on the CPU, so a failure here is the config's, never the device's
        model = MODEL_CLASSES[config.kind](model_config)
    except (ValueError, TypeError, IndexError, ZeroDivisionError) as error:
        raise ConfigError(f"model: {model_config} cannot be built ({error})") from error
    model = model.to(device)
    train = load_mnist("train", config.data_dir, limit=config.train_images)
    schedule = NoiseSchedule.from_name(config.schedule.name, config.schedule.num_timesteps)
    facts: dict[str, Any] = {}
    inputs = train.images
    if config.kind == "latent":
        inputs, facts = encode_with_vae(config, train.images, device)
    if config.kind == "peer":
        inputs = pad_to_peer(train.images)
    if config.kind == "classifier" and config.noise_max_timestep:
        if not model_config.noise_aware:
            raise ConfigError("noise_max_timestep needs model.noise_aware: true")
        if config.noise_max_timestep > schedule.num_timesteps:
            raise ConfigError(
                f"noise_max_timestep {config.noise_max_timestep} exceeds the schedule's "
                f"{schedule.num_timesteps} timesteps"
            )
    uses_schedule = config.kind in DIFFUSION_KINDS or config.noise_max_timestep
    return Task(config, model, inputs.to(device), train.labels.to(device),
                schedule if uses_schedule else None, facts)


def load_vae(path: str | Path, device: torch.device | str = "cpu") -> VAE:
    """A trained VAE from its checkpoint, in eval mode."""
    vae, metadata = load_model(path, device)
    if metadata.get("kind") != "vae":
        raise ConfigError(f"{path} is a {metadata.get('kind')!r} checkpoint, not a VAE")
    return vae


@torch.inference_mode()
def encode_with_vae(
    config: TrainConfig, images: Tensor, device: torch.device
) -> tuple[Tensor, dict[str, Any]]:
    """Latents (posterior mean x the VAE's scale factor) of every training image."""
    if not config.vae_checkpoint:
        raise ConfigError("the latent model needs vae_checkpoint: the trained VAE to encode with")
    vae = load_vae(config.vae_checkpoint, device)
    latents = torch.cat([to_latent(vae, chunk.to(device)) for chunk in images.split(1024)])
    vae_meta = load_metadata(config.vae_checkpoint)
    facts = {
        "vae_checkpoint": str(config.vae_checkpoint),
        "vae_train_seconds": vae_meta.get("train_seconds"),
        "latent_shape": list(vae.latent_shape),
    }
    return latents.cpu(), facts


# -- files -----------------------------------------------------------------------------------


def checkpoint_paths(config: TrainConfig) -> tuple[Path, Path, Path]:
    """(inference weights, training state, model card) for this run."""
    out = Path(config.out)
    name = config.name or config.kind
    return out / f"{name}.safetensors", out / f"{name}.state.safetensors", out / f"{name}.md"


@dataclass
class Progress:
    step: int = 0
    train_seconds: float = 0.0
    last_loss: float = float("nan")
    images_per_second: float = float("nan")


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
    tracker: Any = None  # a diffbench.tracking.Tracker on rank 0, else None
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
                 final_loss=progress.last_loss, images_per_second=progress.images_per_second)
    save_checkpoint(weights_path, run.inference_model.state_dict(), facts)
    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()}
    if run.ema is not None:
        state["ema"] = run.ema.state_dict()
    tensors, structure = pack_state(state)
    save_checkpoint(state_path, tensors, dict(facts, structure=structure))


def restore_training(run: Run) -> None:
    """Load model, EMA, optimizer and progress from the run's training state."""
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
                            metadata["images_per_second"])


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
        f"| steps | {metadata['step']} |",
        f"| training wall time | {metadata['train_seconds']:.1f} s |",
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


# -- evaluation and pictures at the end of a run ---------------------------------------------


@time_execution(name="sample")
@torch.inference_mode()
def sample_grid(task: Task, model: nn.Module, path: Path, device: torch.device) -> dict[str, Any]:
    """A PNG that shows what the model does, plus summary numbers for the model card."""
    config = task.config
    gen = torch.Generator().manual_seed(config.seed)
    test = load_mnist("test", config.data_dir, limit=1000)
    model.eval()
    extra: dict[str, Any] = {}
    if task.is_diffusion:
        space = "latent" if config.kind == "latent" else "pixel"
        sampler = DDIMSampler(task.schedule, clip_sample=clip_sample(space))
        shape = (16, *task.inputs.shape[1:])
        x = sampler.sample(model, torch.randn(shape, generator=gen).to(device))
        if config.kind == "latent":
            vae = load_vae(config.vae_checkpoint, device)
            x = from_latent(vae, x)
        if config.kind == "peer":
            x = crop_from_peer(x)
        images = x.clamp(-1, 1)
    elif config.kind == "vae":
        source = test.images[:16].to(device)
        reconstruction = model.decode(model.encode(source)[0])
        extra["test_reconstruction_mse"] = round(float(F.mse_loss(reconstruction, source)), 5)
        extra["scale_factor"] = round(float(model.scale_factor), 5)
        images = torch.cat([source, reconstruction.clamp(-1, 1)])
    else:
        inputs, labels = test.images.to(device), test.labels.to(device)
        t = None
        if config.noise_max_timestep:
            inputs, t, _ = task.noised(inputs, config.noise_max_timestep, gen)
        correct = model(inputs, t).argmax(1) == labels
        extra["test_accuracy_first_1000"] = round(float(correct.float().mean()), 4)
        wrong = inputs[~correct][:32]
        images = wrong if len(wrong) else inputs[:32]
    model.train()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, path, nrow=8)
    return extra


@torch.inference_mode()
def measure_scale_factor(vae: VAE, images: Tensor, device: torch.device) -> float:
    """1 / std of the posterior means on (up to 10k) training images (Rombach et al. 2022,
    sec. G: the latent is rescaled to unit variance before diffusion)."""
    vae.eval()
    means = torch.cat([vae.encode(chunk.to(device))[0] for chunk in images[:10_000].split(1024)])
    vae.train()
    return 1.0 / float(means.float().std())


# -- the loop --------------------------------------------------------------------------------


def train(
    config: TrainConfig, resume: bool = False, stop_at: int | None = None, command: str = ""
) -> Path:
    """Train ``config.kind`` for ``config.steps`` steps (stopping early after ``stop_at``,
    checkpointed, as an interruption would) and return the inference checkpoint's path."""
    device = resolve_device(config.device)
    check_writable_dir(config.out)
    ddp, device = init_distributed(device)
    try:
        run = prepare_run(config, device, ddp, resume, command)
        end = min(config.steps, stop_at or config.steps)
        if not ddp.is_main:
            fit(run, end)
            return checkpoint_paths(config)[0]
        with start_run(config.experiment, run_name=run.metadata["name"],
                       params=config.model_dump(),
                       tags={"kind": config.kind, "resumed": str(resume)}) as tracker:
            run.tracker = tracker
            tracker.log_params({f"model.{k}": v for k, v in run.metadata["stats"].items()})
            with graceful_stop(enabled=ddp.world_size == 1) as received:
                run.stop_signals = received
                fit(run, end)
            return finish(run)
    finally:
        if ddp.world_size > 1:
            dist.destroy_process_group()


def prepare_run(
    config: TrainConfig, device: torch.device, ddp: Distributed, resume: bool, command: str
) -> Run:
    """Model, EMA, optimizer and metadata, restored from the training state on ``resume``."""
    if config.time_budget_s is not None and ddp.world_size > 1:
        raise ConfigError("time_budget_s needs a single process (ranks' clocks differ); "
                          "under torchrun set steps instead")
    torch.manual_seed(config.seed)
    task = build_task(config, device)
    model = task.model
    trainable: nn.Module = model
    if ddp.world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        trainable = DistributedDataParallel(model, device_ids=device_ids)
    try:
        stats = model_stats(model, *_example_args(task, task.inputs[:2]))
    except torch.OutOfMemoryError:
        raise
    except (ValueError, RuntimeError, IndexError) as error:  # shapes the config cannot take
        raise ConfigError(f"model: {task.model.cfg} does not run on this data ({error})") from error
    metadata = {
        "name": checkpoint_paths(config)[0].stem,
        "kind": config.kind,
        **model_metadata(model),
        "schedule": config.schedule.model_dump() if task.schedule is not None else None,
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
        ema=_frozen_copy(model) if task.is_diffusion else None,
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


def _frozen_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).requires_grad_(False).eval()


def _example_args(task: Task, example: Tensor) -> tuple[Tensor, ...]:
    timesteps = torch.zeros(len(example), dtype=torch.long, device=example.device)
    if task.is_diffusion or task.config.noise_max_timestep:
        return example, timesteps
    return (example,)


@time_execution(name="train")
def fit(run: Run, end: int) -> None:
    """Epochs until step ``end``, or until ``time_budget_s`` seconds of training have run."""
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
    budget = run.task.config.time_budget_s
    return budget is not None and run.progress.train_seconds >= budget


def train_step(run: Run, index: Tensor, generator: torch.Generator) -> Tensor:
    """One optimizer step on the examples ``index``: learning rate for the step, loss (bf16
    autocast on CUDA), backward, gradient clipping, AdamW, EMA. Returns the loss."""
    task, config, step = run.task, run.task.config, run.progress.step
    for group in run.optimizer.param_groups:
        group["lr"] = config.lr * learning_rate_factor(step, config)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if run.device.type == "cuda" else nullcontext()
    )
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
        step_start = time.perf_counter()
        index = batch_indices(len(task.inputs), config, run.ddp, progress.step, run.device)
        generator = step_generator(config.seed, run.ddp.rank, progress.step, run.device)
        loss = train_step(run, index, generator)
        synchronize(run.device)  # the clock (and time_budget_s) counts the GPU's work too
        progress.step += 1
        progress.train_seconds += time.perf_counter() - step_start
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


def finish(run: Run) -> Path:
    """Last checkpoint, sample grid and model card, the latter two logged as artifacts."""
    config = run.task.config
    if config.kind == "vae":
        run.model.scale_factor.fill_(measure_scale_factor(run.model, run.task.inputs, run.device))
    save_training(run)
    weights_path, _, card_path = checkpoint_paths(config)
    grid_path = weights_path.with_name(f"{weights_path.stem}_samples.png")
    extra = sample_grid(run.task, run.inference_model, grid_path, run.device)
    write_atomic_text(card_path, model_card(load_metadata(weights_path), extra))
    if run.tracker is not None:
        run.tracker.log_metrics({k: v for k, v in extra.items() if isinstance(v, int | float)})
        run.tracker.log_metrics({"train_seconds": run.progress.train_seconds})
        for path in (card_path, grid_path):
            run.tracker.log_artifact(path)
    print(f"wrote {weights_path} (step {run.progress.step}, {run.progress.train_seconds:.1f} s)")
    return weights_path
