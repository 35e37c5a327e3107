"""``diffbench shapes``: the latent-shape sweep of latent diffusion.

Each folder holds one latent shape's system, trained under the same CPU budget: ``vae``,
``latent`` and the ``latent_noisy_classifier`` of that VAE's latents (``fixtures/train.sh``).
For each it measures, on the same test digits and seeds:

* the VAE's reconstruction (MSE and the classifier's preservation);
* the noised accuracy of its latent space at t = 299 and 499 (how much of a digit's identity
  survives the noise of strength 0.3 and 0.5 in that space);
* LDM-DDIM-50's image-to-image fidelity at each strength (via :func:`scoring.score_system`);
* its seconds per image at batch 64, strength 0.3, VAE included, against pixel DDIM-50's: the
  two timed alternately in this process, so drift on a shared machine hits both alike.

The table, with the goals of the shipped latent system, and a trade-off plot go to Markdown and
PNG; every number also goes to JSON.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffbench.core.environment import environment_facts
from diffbench.core.files import write_atomic_text
from diffbench.core.resources import checkpoints_dir
from diffbench.io.checkpoints import load_metadata, load_model
from diffbench.measure.metrics import Judge
from diffbench.measure.scoring import (
    LATENT_MAX_MSE_RATIO,
    LATENT_MAX_PRESERVATION_GAP,
    Digits,
    load_digits,
    measure_latency,
    noised_accuracy,
    score_system,
    vae_reconstruction,
)
from diffbench.systems.translate import Translator

FILES = ("vae.safetensors", "latent.safetensors", "latent_noisy_classifier.safetensors")
"""What a shape's folder must hold."""

TIMING_BATCH = 64

# The shipped latent system's targets at strength 0.3, against pixel DDIM-50: preservation
# within 3 points, MSE at most 1.5x, 3x the speed.
MAX_PRESERVATION_GAP = LATENT_MAX_PRESERVATION_GAP
MAX_MSE_RATIO = LATENT_MAX_MSE_RATIO
MIN_SPEEDUP = 3.0


@dataclass
class Sweep:
    """Everything one sweep measured: the pixel reference and one row per shape."""

    pixel: dict[str, Any]
    shapes: list[dict[str, Any]]
    setup: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"setup": self.setup, "pixel": self.pixel, "shapes": self.shapes}


def training_facts(folder: Path, system: Translator) -> dict[str, Any]:
    """Shape, steps and CPU-seconds of the VAE and the latent UNet; the totals and parameter
    counts are the system's own facts (:meth:`Translator.from_checkpoints`)."""
    vae, unet = (load_metadata(folder / name) for name in FILES[:2])
    return {
        "latent_shape": "x".join(map(str, unet.get("latent_shape") or [])),
        "vae_steps": vae["step"], "unet_steps": unet["step"],
        "vae_cpu_seconds": vae.get("cpu_seconds", float("nan")),
        "unet_cpu_seconds": unet.get("cpu_seconds", float("nan")),
        "cpu_seconds": system.facts["train_cpu_seconds"] or float("nan"),
        "train_seconds": system.facts["train_seconds"],
        "vae_parameters": system.facts["vae_parameters"],
        "unet_parameters": system.facts["unet_parameters"],
        "unet_final_loss": unet.get("final_loss", float("nan")),
    }


def fidelity(system: Translator, judge: Judge, digits: Digits, strengths: tuple[float, ...],
             seed: int) -> dict[str, dict[str, Any]]:
    """Strength -> the system's scores there (a row of :func:`diffbench.results.row.make_row`)."""
    return {f"{s:g}": score_system(system, judge, digits, s, seed)[0]
            for s in strengths}


def alternate_latency(systems: list[Translator], images: torch.Tensor, strength: float,
                      rounds: int, seed: int) -> list[float]:
    """Median seconds per image of each system, timed one call each in turn for ``rounds``
    rounds after one untimed call each."""
    seconds: list[list[float]] = [[] for _ in systems]
    for round_ in range(rounds + 1):
        for i, system in enumerate(systems):
            timing = measure_latency(system, images, strength, seed, repeats=1,
                                     warmup=1 if round_ == 0 else 0, memory=False)
            if round_:
                seconds[i].append(timing["sec_per_image"])
    return [statistics.median(s) for s in seconds]


def run_sweep(
    folders: list[Path],
    checkpoints: Path | None = None,
    num_images: int = 512,
    strengths: tuple[float, ...] = (0.3, 0.5),
    rounds: int = 7,
    device: str = "cpu",
    data_dir: str | None = None,
    seed: int = 0,
) -> Sweep:
    """Measure every shape's folder against pixel DDIM-50 from ``checkpoints`` (default: the
    shipped ones)."""
    checkpoints = Path(checkpoints or checkpoints_dir())
    judge = Judge.from_checkpoints(checkpoints, device)
    digits = load_digits(judge, num_images, data_dir)
    pixel = Translator.from_checkpoints(checkpoints, "pixel", "ddim", device=device)
    pixel_fidelity = fidelity(pixel, judge, digits, strengths, seed)
    timing_images = digits.images[:TIMING_BATCH]
    rows = []
    for folder in folders:
        latent_judge = Judge(judge.classifier, judge.noisy_classifier, judge.device,
                             latent_noisy_classifier=load_model(folder / FILES[2], device)[0])
        system = Translator.from_checkpoints(folder, "latent", "ddim", device=device)
        pixel_s, latent_s = alternate_latency([pixel, system], timing_images, strengths[0],
                                              rounds, seed)
        rows.append({
            "folder": str(folder),
            **training_facts(folder, system),
            "vae": vae_reconstruction(folder, judge, digits.images, digits.labels, seed),
            "noised_accuracy": {
                f"{s:g}": noised_accuracy(system, latent_judge, digits,
                                          system.plan(s).start_timestep, seed)
                for s in strengths
            },
            "fidelity": fidelity(system, latent_judge, digits, strengths, seed),
            "sec_per_image": latent_s,
            "pixel_sec_per_image": pixel_s,
            "speedup": pixel_s / latent_s,
        })
    setup = {"num_images": num_images, "strengths": list(strengths), "timing_batch":
             len(timing_images), "timing_rounds": rounds, "seed": seed, "device": device,
             "checkpoints": str(checkpoints), "environment": environment_facts()}
    return Sweep({"fidelity": pixel_fidelity}, rows, setup)


def goals(row: dict[str, Any], pixel: dict[str, Any], strength: str = "0.3") -> dict[str, bool]:
    """Which of the shipped latent system's goals this shape meets at ``strength``."""
    latent, reference = row["fidelity"][strength], pixel["fidelity"][strength]
    return {
        "preservation": latent["preservation"] >= reference["preservation"]
        - MAX_PRESERVATION_GAP,
        "mse": latent["mse"] <= MAX_MSE_RATIO * reference["mse"],
        "speed": row["speedup"] >= MIN_SPEEDUP,
    }


def _interval(result: dict[str, Any], key: str, fmt: str) -> str:
    lo, hi = result[f"{key}_ci95"]
    return f"{fmt.format(result[key])} [{fmt.format(lo)}, {fmt.format(hi)}]"


def markdown(sweep: Sweep) -> str:
    """The sweep's table (one row per shape, pixel DDIM-50 first) and its setup."""
    strengths = [f"{s:g}" for s in sweep.setup["strengths"]]
    head = ["shape", "train CPU s (VAE + UNet)", "VAE recon. MSE", "VAE preservation"]
    head += [f"noised acc. t={int(float(s) * 1000) - 1}" for s in strengths]
    for s in strengths:
        head += [f"preservation @{s}", f"MSE @{s}"]
    head += ["s/image (b64, @0.3)", "speed-up", "goals @0.3 (pres., MSE, speed)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    pixel = sweep.pixel["fidelity"]
    pixel_cells = ["pixel DDIM-50 (1x28x28)", "", "", ""] + [""] * len(strengths)
    for s in strengths:
        pixel_cells += [_interval(pixel[s], "preservation", "{:.3f}"),
                        _interval(pixel[s], "mse", "{:.4f}")]
    pixel_cells += [f"{statistics.median(r['pixel_sec_per_image'] for r in sweep.shapes):.4f}"
                    if sweep.shapes else "", "1", ""]
    lines.append("| " + " | ".join(pixel_cells) + " |")
    for row in sweep.shapes:
        met = goals(row, sweep.pixel)
        cells = [f"LDM-DDIM-50 ({row['latent_shape']})",
                 f"{row['cpu_seconds']:.0f} ({row['vae_cpu_seconds']:.0f} + "
                 f"{row['unet_cpu_seconds']:.0f})",
                 _interval(row["vae"], "reconstruction_mse", "{:.4f}"),
                 _interval(row["vae"], "preservation", "{:.3f}")]
        cells += [_interval(row["noised_accuracy"][s], "noised_accuracy", "{:.3f}")
                  for s in strengths]
        for s in strengths:
            cells += [_interval(row["fidelity"][s], "preservation", "{:.3f}"),
                      _interval(row["fidelity"][s], "mse", "{:.4f}")]
        cells += [f"{row['sec_per_image']:.4f}", f"{row['speedup']:.2f}x",
                  ", ".join("yes" if met[k] else "**no**" for k in ("preservation", "mse",
                                                                     "speed"))]
        lines.append("| " + " | ".join(cells) + " |")
    setup = sweep.setup
    env = setup["environment"]
    notes = [
        "",
        f"{setup['num_images']} test digits per cell, seed {setup['seed']}; brackets: 95% "
        f"intervals (bootstrap over digits; Wilson for shares). Noised accuracy: each shape's "
        f"own latent noise-aware classifier on z_t. Speed: median of {setup['timing_rounds']} "
        f"calls of {setup['timing_batch']} digits each, latent (VAE included) and pixel "
        f"DDIM-50 timed alternately; speed-up = pixel s/image over latent s/image. Measured on "
        f"{setup['device']} ({env.get('cpu')}, {env.get('torch_threads')} threads, torch "
        f"{env.get('torch')}).",
        f"Goals of the shipped latent system at strength 0.3, against pixel DDIM-50: "
        f"preservation within {MAX_PRESERVATION_GAP * 100:.0f} points, MSE at most "
        f"{MAX_MSE_RATIO:g}x, at least {MIN_SPEEDUP:g}x faster per image.",
    ]
    return "\n".join(lines + notes) + "\n"


def plot(sweep: Sweep, path: Path, strength: str = "0.3") -> Path:
    """Preservation and MSE at ``strength`` against speed-up over pixel DDIM-50, one point per
    shape with its 95% interval, pixel DDIM-50 and the goals marked and labelled."""
    from diffbench.results.plots import SAVE, plt

    pixel = sweep.pixel["fidelity"][strength]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    goals = ((axes[0], "preservation", pixel["preservation"] - MAX_PRESERVATION_GAP,
              f"goal: at most {MAX_PRESERVATION_GAP * 100:g} points below pixel DDIM-50"),
             (axes[1], "mse", pixel["mse"] * MAX_MSE_RATIO,
              f"goal: at most {MAX_MSE_RATIO:g}x pixel DDIM-50's"))
    for ax, key, limit, label in goals:
        for row in sweep.shapes:
            value = row["fidelity"][strength]
            lo, hi = value[f"{key}_ci95"]
            ax.errorbar(row["speedup"], value[key], yerr=[[value[key] - lo], [hi - value[key]]],
                        fmt="o", capsize=3)
            ax.annotate(row["latent_shape"], (row["speedup"], value[key]),
                        textcoords="offset points", xytext=(6, 4))
        ax.errorbar(1.0, pixel[key], yerr=[[pixel[key] - pixel[f"{key}_ci95"][0]],
                                           [pixel[f"{key}_ci95"][1] - pixel[key]]],
                    fmt="s", color="black", capsize=3)
        ax.annotate("pixel DDIM-50", (1.0, pixel[key]), textcoords="offset points",
                    xytext=(6, -10))
        ax.axhline(limit, color="grey", linestyle="--", linewidth=1)
        ax.annotate(label, (0.01, limit), xycoords=("axes fraction", "data"), fontsize=7,
                    color="dimgrey", xytext=(0, 2), textcoords="offset points")
        ax.axvline(MIN_SPEEDUP, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"goal: {MIN_SPEEDUP:g}x faster", (MIN_SPEEDUP, 0.98),
                    xycoords=("data", "axes fraction"), fontsize=7, color="dimgrey",
                    xytext=(3, 0), textcoords="offset points", va="top")
        ax.set_xlabel("speed-up over pixel DDIM-50\n(batch 64, VAE included, alternating calls)")
        ax.set_ylabel(f"{key} at strength {strength} (95% interval)")
        ax.grid(alpha=0.3)
    axes[0].set_title("LDM-DDIM-50 by latent shape")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, **SAVE)
    plt.close(fig)
    return path


def write_sweep(sweep: Sweep, out: Path) -> list[Path]:
    """``out`` (Markdown), with the plot and the JSON beside it (same stem)."""
    json_path = write_atomic_text(out.with_suffix(".json"),
                                  json.dumps(sweep.as_dict(), indent=2) + "\n")
    png_path = plot(sweep, out.with_suffix(".png"))
    table = markdown(sweep)
    body = (f"# Latent shapes\n\n![trade-off]({png_path.name})\n\n{table}\n"
            f"Every number: [{json_path.name}]({json_path.name}).\n")
    return [write_atomic_text(out, body), png_path, json_path]
