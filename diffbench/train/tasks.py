"""What each model kind trains: one registered :class:`Task` class per kind (``pixel``,
``latent``, ``peer``, ``vae``, ``classifier``), each with its model, data, loss, preview and
model-card facts. A new kind is one class here plus its model config in
:data:`diffbench.io.config.MODEL_CONFIGS`.

Losses:

* pixel / latent / peer: the "simple" DDPM objective ||eps - eps_theta(x_t, t)||^2
  (Ho et al. 2020, eq. 14), or with ``min_snr_gamma`` each example weighted by
  min(SNR_t, gamma) / SNR_t, SNR_t = alpha_bar_t / (1 - alpha_bar_t) (Min-SNR-gamma for
  eps-prediction, Hang et al. 2023, arXiv 2303.09556, eq. 8); with ``prediction: v`` the same
  loss on v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022, arXiv 2202.00512);
* pixel / latent with ``prediction: flow``: rectified flow (conditional flow matching),
  ||(eps - x0) - v_theta(x_s, 1000 s)||^2 on x_s = (1 - s) x0 + s eps, with s drawn from SD3's
  logit-normal density, s = sigmoid(m + std * u), u ~ N(0, 1) (Esser et al. 2024,
  arXiv 2403.03206, sec. 3.1; Liu et al. 2022, arXiv 2209.03003);
* pixel / latent with ``prediction: consistency`` or ``meanflow``, tuned from a flow network
  (``init_from``): Easy Consistency Tuning and MeanFlow (:mod:`diffbench.train.one_step`);
* vae: reconstruction MSE + ``kl_weight`` * KL(q(z|x) || N(0, I)) (Rombach et al. 2022, sec. 3);
* classifier: cross-entropy, on x_t at t < ``noise_max_timestep`` when noise-aware; with
  ``space: latent`` on the shipped VAE's latents z (and z_t), the latent space's classifier.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffbench.core.system import clip_sample, from_latent
from diffbench.io.checkpoints import load_checkpoint, sha256_file
from diffbench.io.config import ConfigError, TrainConfig
from diffbench.io.data import MNISTTensors
from diffbench.models import VAE, Classifier, PeerUNet, UNet
from diffbench.models.peer import crop_from_peer, pad_to_peer
from diffbench.sampling import DEFAULT_STEPS, DDIMSampler, randn_like
from diffbench.sampling.one_step import ConsistencySampler, MeanFlowSampler
from diffbench.sampling.paths import FLOW_TIMESTEP_SCALE, flow_path
from diffbench.sampling.schedule import NoiseSchedule
from diffbench.sampling.solvers import EulerSampler
from diffbench.train.base import TASKS, Task, register_task
from diffbench.train.latents import encode_with_vae, load_vae
from diffbench.train.one_step import consistency_loss, logit_normal, meanflow_loss

PREVIEW_SAMPLERS = {"flow": (EulerSampler, DEFAULT_STEPS), "consistency": (ConsistencySampler, 2),
                    "meanflow": (MeanFlowSampler, 2)}
"""Prediction -> the sampler and steps of the training preview (default: DDIM-50)."""
TUNED = ("consistency", "meanflow")
"""Predictions trained from another network's weights (``init_from``)."""


def min_snr_weights(schedule: NoiseSchedule, t: Tensor, gamma: float) -> Tensor:
    """min(SNR_t, gamma) / SNR_t per timestep, SNR_t = alpha_bar_t / (1 - alpha_bar_t): the
    Min-SNR-gamma weight of the eps-prediction loss (Hang et al. 2023, eq. 8). It is 1 where
    SNR_t <= gamma (the noisy steps) and shrinks the nearly clean steps' weight to gamma / SNR_t."""
    alpha_bar = schedule.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


class DiffusionTask(Task):
    """A denoising network: eps- or v-prediction on the VP path, or rectified flow
    (``config.prediction``), or a one-step network tuned from a flow network; the preview
    samples 16 digits with DDIM-50, RF-Euler-50, CM-2 or MF-2."""

    diffusion = True
    space = "pixel"

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        if config.prediction != "eps" and self.kind == "peer":
            raise ConfigError(f"the peer trains eps-prediction only, not {config.prediction!r}")
        if config.prediction != "eps" and config.min_snr_gamma is not None:
            raise ConfigError(f"min_snr_gamma weights the eps loss only, not prediction "
                              f"{config.prediction!r}; set min_snr_gamma: null")
        if (config.prediction in TUNED) != (config.init_from is not None):
            why = ("is tuned from a flow network: set init_from" if config.prediction in TUNED
                   else f"trains from scratch; init_from applies to {' and '.join(TUNED)}")
            raise ConfigError(f"prediction {config.prediction!r} {why}")
        if config.prediction == "meanflow" and not config.model.get("interval_time"):
            raise ConfigError("prediction 'meanflow' needs the second time input: set "
                              "model.interval_time: true")
        super().__init__(config, device)
        self.facts["prediction"] = config.prediction
        self.progress = 0.0  # the run's share done, set by the loop (ECT's stage follows it)
        if config.init_from is not None:
            self.facts["init_from"] = self.start_from(config.init_from)

    def start_from(self, path: str) -> dict[str, Any]:
        """Load the starting network's weights (all but MeanFlow's new interval MLP, which
        starts at zero); its facts, for the card and the budget."""
        tensors, metadata = load_checkpoint(path, self.device)
        if metadata.get("prediction", "eps") != "flow":
            raise ConfigError(f"init_from {path} predicts {metadata.get('prediction', 'eps')!r}; "
                              f"{self.config.prediction} tunes a flow network")
        missing, unexpected = self.model.load_state_dict(tensors, strict=False)
        if unexpected or any(not key.startswith("interval_mlp.") for key in missing):
            raise ConfigError(f"init_from {path} does not fit this model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); use its model config")
        return {"name": metadata.get("name"), "sha256": sha256_file(path),
                "cpu_seconds": metadata.get("cpu_seconds"),
                "train_seconds": metadata.get("train_seconds"), "step": metadata.get("step")}

    def example_args(self, example: Tensor) -> tuple[Tensor, ...]:
        return example, torch.zeros(len(example), dtype=torch.long, device=example.device)

    def loss(self, model: nn.Module, batch: Tensor, labels: Tensor, gen: torch.Generator) -> Tensor:
        if self.config.prediction == "flow":
            return self.flow_loss(model, batch, gen)
        if self.config.prediction == "consistency":
            return consistency_loss(model, batch, gen, self.config, self.progress)
        if self.config.prediction == "meanflow":
            return meanflow_loss(model, batch, gen, self.config)
        x_t, t, eps = self.noised(batch, self.schedule.num_timesteps, gen)
        target = eps
        if self.config.prediction == "v":
            alpha_bar = self.schedule.alphas_cumprod.to(batch.device, torch.float32)[t]
            a = alpha_bar.sqrt().view(-1, *([1] * (batch.dim() - 1)))
            target = a * eps - (1 - a.square()).sqrt() * batch
        if self.config.min_snr_gamma is None:
            return F.mse_loss(model(x_t, t), target)
        per_example = (model(x_t, t) - target).pow(2).flatten(1).mean(1)
        return (self.loss_weights[t] * per_example).mean()

    def flow_loss(self, model: nn.Module, batch: Tensor, gen: torch.Generator) -> Tensor:
        """Conditional flow matching on the straight path, sigma ~ logit-normal."""
        sigma = logit_normal(len(batch), self.config, gen).to(batch.device)
        eps = randn_like(batch, gen)
        x_s = flow_path(batch, eps, sigma)
        return F.mse_loss(model(x_s, sigma * FLOW_TIMESTEP_SCALE), eps - batch)

    @functools.cached_property
    def loss_weights(self) -> Tensor:
        """The Min-SNR weight of every timestep, on the device in float32: built once, indexed
        per step (no table copy or float64 math on the training hot path)."""
        every = torch.arange(self.schedule.num_timesteps)
        weights = min_snr_weights(self.schedule, every, self.config.min_snr_gamma)
        return weights.to(device=self.device, dtype=torch.float32)

    def preview(
        self, model: nn.Module, test: MNISTTensors, gen: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        cls, steps = PREVIEW_SAMPLERS.get(self.config.prediction, (DDIMSampler, DEFAULT_STEPS))
        sampler = cls(self.schedule, steps, clip_sample=clip_sample(self.space),
                      prediction=self.config.prediction)
        x_T = torch.randn((16, *self.inputs.shape[1:]), generator=gen).to(self.device)
        return self.to_digits(sampler.sample(model, x_T)).clamp(-1, 1), {}

    def to_digits(self, x: Tensor) -> Tensor:
        """Samples in the model's space -> digits."""
        return x


@register_task
class PixelTask(DiffusionTask):
    kind, model_class = "pixel", UNet


@register_task
class LatentTask(DiffusionTask):
    """Diffusion on the scaled latents of a trained VAE (Rombach et al. 2022)."""

    kind, model_class, space = "latent", UNet, "latent"

    def prepare(self, images: Tensor) -> Tensor:
        latents, self.facts = encode_with_vae(self.config, images, self.device)
        return latents

    def to_digits(self, x: Tensor) -> Tensor:
        return from_latent(load_vae(self.config.vae_checkpoint, self.device), x)


@register_task
class PeerTask(DiffusionTask):
    """The diffusers peer: the same loss on digits padded to 32x32."""

    kind, model_class = "peer", PeerUNet

    def prepare(self, images: Tensor) -> Tensor:
        return pad_to_peer(images)

    def to_digits(self, x: Tensor) -> Tensor:
        return crop_from_peer(x)


@register_task
class VAETask(Task):
    kind, model_class = "vae", VAE

    def loss(self, model: nn.Module, batch: Tensor, labels: Tensor, gen: torch.Generator) -> Tensor:
        reconstruction, mean, logvar = model(batch, generator=gen)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return F.mse_loss(reconstruction, batch) + self.config.kl_weight * kl

    def preview(
        self, model: nn.Module, test: MNISTTensors, gen: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        source = test.images[:16].to(self.device)
        reconstruction = model.decode(model.encode(source)[0])
        extra = {"test_reconstruction_mse": round(float(F.mse_loss(reconstruction, source)), 5),
                 "scale_factor": round(float(model.scale_factor), 5)}
        return torch.cat([source, reconstruction.clamp(-1, 1)]), extra

    @torch.inference_mode()
    def finish(self, model: nn.Module) -> None:
        """The scale factor: 1 / std of the posterior means on (up to 10k) training images
        (Rombach et al. 2022, sec. G: the latent is rescaled to unit variance)."""
        model.eval()
        chunks = self.inputs[:10_000].split(1024)
        means = torch.cat([model.encode(chunk)[0] for chunk in chunks])
        model.train()
        model.scale_factor.fill_(1.0 / float(means.float().std()))


@register_task
class ClassifierTask(Task):
    """Digit labels from digits, or (noise-aware) from x_t and t; ``space: latent`` classifies
    the VAE's latents instead of pixels."""

    kind, model_class = "classifier", Classifier

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        super().__init__(config, device)
        if config.noise_max_timestep:
            if not self.model.cfg.noise_aware:
                raise ConfigError("noise_max_timestep needs model.noise_aware: true")
            if config.noise_max_timestep > self.schedule.num_timesteps:
                raise ConfigError(
                    f"noise_max_timestep {config.noise_max_timestep} exceeds the schedule's "
                    f"{self.schedule.num_timesteps} timesteps"
                )

    @property
    def uses_schedule(self) -> bool:
        return bool(self.config.noise_max_timestep)

    def prepare(self, images: Tensor) -> Tensor:
        if self.config.space == "pixel":
            return images
        latents, self.facts = encode_with_vae(self.config, images, self.device)
        return latents

    def example_args(self, example: Tensor) -> tuple[Tensor, ...]:
        if not self.config.noise_max_timestep:
            return (example,)
        return example, torch.zeros(len(example), dtype=torch.long, device=example.device)

    def loss(self, model: nn.Module, batch: Tensor, labels: Tensor, gen: torch.Generator) -> Tensor:
        if self.config.noise_max_timestep:
            x_t, t, _ = self.noised(batch, self.config.noise_max_timestep, gen)
            return F.cross_entropy(model(x_t, t), labels)
        return F.cross_entropy(model(batch), labels)

    def preview(
        self, model: nn.Module, test: MNISTTensors, gen: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        """Accuracy on the first 1,000 test digits (noised if noise-aware); the grid shows the
        misread ones (pixel space)."""
        inputs, labels = self.prepare(test.images).to(self.device), test.labels.to(self.device)
        t = None
        if self.config.noise_max_timestep:
            inputs, t, _ = self.noised(inputs, self.config.noise_max_timestep, gen)
        correct = model(inputs, t).argmax(1) == labels
        extra = {"test_accuracy_first_1000": round(float(correct.float().mean()), 4)}
        shown = inputs if self.config.space == "pixel" else test.images.to(self.device)
        wrong = shown[~correct][:32]
        return (wrong if len(wrong) else shown[:32]), extra


def build_task(config: TrainConfig, device: torch.device) -> Task:
    """The task of ``config.kind``, its model on ``device`` and its data loaded."""
    return TASKS[config.kind](config, device)
