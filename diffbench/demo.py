"""A training-free demonstration of the API: DDPM and DDIM image-to-image on real MNIST.

The model is the exact minimum-mean-squared-error denoiser of an empirical distribution (a set
of training digits): E[x0 | x_t] is a softmax-weighted average of the reference digits with
weights exp(-||x_t - sqrt(ab_t) y_i||^2 / (2 (1 - ab_t))) (Tweedie's formula; see Karras et al.
2022, "Elucidating the Design Space...", appendix B.3). It needs no checkpoint, so the samplers
can be shown on real digits before any network is trained. Being optimal for its reference set,
it snaps each noised digit onto a nearby reference digit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from diffbench.io.data import load_mnist
from diffbench.sampling import DDIMSampler, DDPMSampler, Sampler
from diffbench.sampling.schedule import NoiseSchedule


class EmpiricalDenoiser:
    """``model(x_t, t) -> eps`` that is Bayes-optimal for the uniform distribution on
    ``references`` [N, C, H, W] under ``schedule``'s forward process."""

    def __init__(self, references: Tensor, schedule: NoiseSchedule) -> None:
        self.references = references.flatten(1)
        self.sq_norms = self.references.pow(2).sum(1)
        self.alphas_cumprod = schedule.alphas_cumprod.to(references.dtype)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        ab = self.alphas_cumprod[t.cpu()].to(x_t.device).unsqueeze(1)  # [B, 1]
        flat = x_t.flatten(1)
        # -||x_t - sqrt(ab) y||^2 without the |x_t|^2 term, which the softmax cancels.
        logits = (2 * ab.sqrt() * flat @ self.references.T - ab * self.sq_norms) / (2 * (1 - ab))
        x0 = torch.softmax(logits, dim=1) @ self.references
        return ((flat - ab.sqrt() * x0) / (1 - ab).sqrt()).view_as(x_t)


@dataclass(frozen=True)
class DemoResult:
    sampler: str
    strength: float
    steps: int
    sec_per_image: float
    mse: float


def run_demo(
    out_dir: Path,
    data_dir: str | None = None,
    num_images: int = 8,
    num_references: int = 10_000,
    strengths: tuple[float, ...] = (0.3, 0.5),
    seed: int = 0,
) -> list[DemoResult]:
    """Noise ``num_images`` test digits to each strength and denoise them with DDPM-1000 and
    DDIM-50; write ``demo_grid.png`` (rows: source, noised, DDPM, DDIM per strength)."""
    schedule = NoiseSchedule.linear()
    model = EmpiricalDenoiser(load_mnist("train", data_dir, limit=num_references).images, schedule)
    source = load_mnist("test", data_dir, limit=num_images).images
    samplers: dict[str, Sampler] = {
        "DDPM-1000": DDPMSampler(schedule),
        "DDIM-50": DDIMSampler(schedule, num_steps=50),
    }
    results, rows = [], []
    for strength in strengths:
        noise = torch.randn(source.shape, generator=torch.Generator().manual_seed(seed))
        first_t = samplers["DDIM-50"].plan(strength).start_timestep
        rows += [source, schedule.add_noise(source, noise, first_t).clamp(-1, 1)]
        for name, sampler in samplers.items():
            start = time.perf_counter()
            with torch.inference_mode():
                out = sampler.img2img(
                    model,
                    source,
                    strength,
                    noise=noise,
                    generator=torch.Generator().manual_seed(seed + 1),
                ).clamp(-1, 1)
            seconds = time.perf_counter() - start
            mse = float((out - source).pow(2).mean())
            steps = sampler.plan(strength).nfe
            results.append(DemoResult(name, strength, steps, seconds / num_images, mse))
            rows.append(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = torch.cat(rows)
    save_image((grid + 1) / 2, out_dir / "demo_grid.png", nrow=num_images, padding=2)
    return results
