"""``diffbench compare``: DDPM, DDIM and latent diffusion side by side on the same digits.

For every system and strength: fidelity on ``num_images`` test digits (scored by
:func:`diffbench.evaluate.score_system`) and latency timed honestly (warm-up calls first, under
``torch.inference_mode``, the device synchronised before the clock stops, the same digits and
seeds for every system, median and spread of ``repeats`` calls). Results reach disk (JSON,
Markdown, PNGs) before MLflow is tried. With ``compile`` set, compilation (or CUDA-graph
capture) happens in untimed calls and is reported apart, as ``compile_seconds``.

Everything that can be checked is checked before the work starts: the device, a writable
output folder, every checkpoint loading into its model, every strength giving a step. Each row
of results.json records what reproduces it: seed, device, torch version and the sha256 of every
checkpoint file the row used, and the translator's settings (compile mode, noise device, TF32,
channels-last weights).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from diffbench.checkpoints import (
    check_writable_dir,
    checkpoint_sha256,
    require_checkpoints,
    write_atomic_text,
)
from diffbench.config import CompareConfig
from diffbench.evaluate import Digits, load_digits, noised_inputs, score_system, start_timestep
from diffbench.metrics import Judge
from diffbench.report import GridBlock, markdown_table, plot_pareto, plot_strength, render_grid
from diffbench.runtime import resolve_device, synchronize
from diffbench.tracking import start_run
from diffbench.translate import Translator

RESULT_KEYS = (
    "name", "space", "sampler", "steps", "strength", "num_images", "sec_per_image", "mse",
    "psnr", "ssim", "preservation", "preservation_ceiling", "frechet_distance", "train_seconds",
    "compile_seconds",
)


def measure_latency(
    translator: Translator, images: torch.Tensor, strength: float, seed: int, repeats: int
) -> dict[str, Any]:
    """Seconds per image of ``repeats`` timed calls on ``images`` (same seed each call); a
    compiled translator first prepares this shape and strength in an untimed call."""
    images = images.to(translator.device)
    if translator.compile:
        translator(images, strength, generator=translator.generator(seed))
    seconds = []
    for _ in range(repeats):
        generator = translator.generator(seed)
        synchronize(translator.device)
        start = time.perf_counter()
        translator(images, strength, generator=generator)
        synchronize(translator.device)
        seconds.append((time.perf_counter() - start) / len(images))
    return {
        "sec_per_image": statistics.median(seconds),
        "sec_per_image_min": min(seconds),
        "sec_per_image_max": max(seconds),
        "timing_repeats": repeats,
        "timing_batch": len(images),
    }


def checkpoint_files(config: CompareConfig) -> list[str]:
    """The checkpoint files the comparison reads (the noise-aware classifier when present)."""
    names = ["classifier.safetensors"]
    if (Path(config.checkpoints) / "noisy_classifier.safetensors").is_file():
        names.append("noisy_classifier.safetensors")
    spaces = {system.space for system in config.systems}
    names += [f"{space}.safetensors" for space in ("pixel", "latent") if space in spaces]
    return names + (["vae.safetensors"] if "latent" in spaces else [])


def run_compare(config: CompareConfig) -> list[dict[str, Any]]:
    """Run the comparison and write results.json, results.md, i2i_comparison.png, pareto.png
    (and fidelity_vs_strength.png for several strengths) into ``config.out``; log to MLflow."""
    device = resolve_device(config.device)
    check_writable_dir(config.out)
    names = checkpoint_files(config)
    require_checkpoints(config.checkpoints, names)
    judge = Judge.from_checkpoints(config.checkpoints, device)
    translators = [
        Translator.from_checkpoints(
            config.checkpoints, system.space, system.sampler, system.steps, system.eta, device,
            compile=config.compile, noise_device=config.noise_device, tf32=config.tf32,
        )
        for system in config.systems
    ]
    for translator in translators:
        for strength in config.strengths:
            translator.sampler.img2img_timesteps(strength)  # a ValueError now, not mid-run
    hashes = checkpoint_sha256(config.checkpoints, names)
    provenance = {"seed": config.seed, "device": str(device), "torch": torch.__version__}
    digits = load_digits(judge, max(config.num_images, config.grid_images), config.data_dir)
    scored = Digits(digits.images[: config.num_images], digits.labels[: config.num_images],
                    digits.reference_features)
    grid_columns: dict[float, list[tuple[str, torch.Tensor]]] = {s: [] for s in config.strengths}
    results = []
    for translator in translators:
        used = [name for name in names if name.startswith(("classifier", "noisy_classifier"))]
        used += [f"{translator.space}.safetensors"]
        used += ["vae.safetensors"] if translator.space == "latent" else []
        timing_images = digits.images[: config.timing_batch]
        compiled_before = translator.compile_seconds
        for _ in range(config.warmup):
            translator(timing_images.to(device), config.strengths[0],
                       generator=translator.generator(config.seed))
        for strength in config.strengths:
            result, outputs = score_system(translator, judge, scored, strength, config.seed)
            row = result.as_dict()
            row.update(measure_latency(translator, timing_images, strength, config.seed,
                                       config.repeats))
            row["train_seconds"] = translator.facts["train_seconds"]
            row["flops_per_image"] = translator.flops_per_image(strength)
            row["compile_seconds"] = translator.compile_seconds - compiled_before
            compiled_before = translator.compile_seconds
            row.update(provenance, **translator.settings,
                       checkpoint_sha256={name: hashes[name] for name in used})
            results.append(row)
            grid_columns[strength].append((translator.name, outputs[: config.grid_images]))
            print(f"{translator.name:>14} strength {strength:.2f}: "
                  f"{row['sec_per_image']:.4f} s/image, mse {row['mse']:.4f}, "
                  f"preservation {row['preservation']:.3f} (ceiling "
                  f"{row['preservation_ceiling']:.3f})")
    files = write_results(config, results, digits, grid_columns, translators[0])
    track(config, results, files)
    return results


def write_results(
    config: CompareConfig,
    results: list[dict[str, Any]],
    digits: Digits,
    grid_columns: dict[float, list[tuple[str, torch.Tensor]]],
    translator: Translator,
) -> list[Path]:
    """The files of a comparison, each written atomically or whole; the grid's noised column
    shows the digits at ``translator``'s start timestep."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = digits.images[: config.grid_images]
    blocks = []
    for strength, columns in grid_columns.items():
        t = start_timestep(translator, strength)
        noised = noised_inputs(translator, sources, strength, config.seed)
        blocks.append(GridBlock(
            title=f"strength {strength:g}",
            labels=["source", f"noised t={t}", *(name for name, _ in columns)],
            columns=[sources, noised, *(images for _, images in columns)],
        ))
    files = [
        write_atomic_text(out / "results.json", json.dumps(results, indent=2) + "\n"),
        write_atomic_text(out / "results.md", markdown_table(results)),
        out / "i2i_comparison.png",
        out / "pareto.png",
    ]
    render_grid(blocks, files[2])
    plot_pareto(results, files[3])
    if len(config.strengths) > 1:
        files.append(out / "fidelity_vs_strength.png")
        plot_strength(results, files[-1])
    return files


def track(config: CompareConfig, results: list[dict[str, Any]], files: list[Path]) -> None:
    """One MLflow run with every metric and the files, plus a nested run per system whose
    metrics are stepped by strength x 100 (so MLflow charts them against strength)."""
    with start_run(config.experiment, run_name="compare", params=config.model_dump()) as run:
        if not run.enabled:
            return  # tracking is unavailable and has warned once; the files are on disk
        for row in results:
            prefix = f"{row['name']}/s{row['strength']:g}/"
            run.log_metrics({prefix + k: v for k, v in row.items()
                             if isinstance(v, int | float) and not isinstance(v, bool)})
        for path in files:
            run.log_artifact(path)
        for name in dict.fromkeys(row["name"] for row in results):
            rows = [row for row in results if row["name"] == name]
            params = {k: rows[0][k] for k in ("space", "sampler")}
            with start_run(config.experiment, run_name=name, params=params, nested=True) as sub:
                for row in rows:
                    sub.log_metrics({k: v for k, v in row.items()
                                     if isinstance(v, int | float) and not isinstance(v, bool)},
                                    step=round(row["strength"] * 100))
