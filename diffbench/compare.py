"""``diffbench compare``: DDPM, DDIM and latent diffusion side by side on the same digits.

Systems are the config's (a registered or ``package.module:Name`` sampler, on the shipped
checkpoint or a ``package.module:factory`` model) and, from Python (:func:`run`), any
:class:`~diffbench.system.System` object. For every system and strength: fidelity on
``num_images`` test digits, each figure with its 95% interval, beside the noised accuracy in the
system's own space; and latency timed the same way for every system (``warmup`` untimed calls at
each strength, then ``repeats`` timed ones, inputs and generators on the device before the
clock starts, the device synchronised before it stops; median, p50/p90/p99, min, max) with the
peak memory of a call; both by :mod:`diffbench.scoring`. These rows are the equal-strength view
(``"view": "equal_strength"``); with ``match_information`` set, each system also gets an
equal-information row (``"view": "equal_information"``) at the strength where its own space's
noised accuracy equals that value (:mod:`diffbench.information`); with ``match_snr``, an
equal-SNR row (``"view": "equal_snr"``) per strength, at the strength whose start has the SNR of
the VP start ``t = int(strength * T) - 1`` (a flow network's input at sigma 0.3 has an SNR of
5.4; a VP input at t = 299 one of 0.66). Every row carries its start's ``start_snr`` and, for a
flow system, ``start_sigma``. Results reach disk (JSON,
Markdown, PNGs) before MLflow is tried. With ``compile`` set, compilation (or CUDA-graph
capture) happens in untimed calls and is reported apart, as ``compile_seconds``.

Everything that can be checked is checked before the work starts: the device, a writable
output folder, every checkpoint loading into its model, every strength giving a step. Each row
of results.json records what reproduces it: seed, device, torch version and the sha256 of every
checkpoint file the row used, and a Translator's settings (compile mode, noise device, TF32,
channels-last weights).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from diffbench.checkpoints import (
    check_writable_dir,
    checkpoint_sha256,
    require_checkpoints,
    write_atomic_text,
)
from diffbench.config import CompareConfig, SystemConfig, validate
from diffbench.errors import InputError
from diffbench.information import match_information, strength_for_timestep
from diffbench.metrics import NOISY_CLASSIFIERS, Judge
from diffbench.nfe import fewest_nfe, fewest_nfe_markdown
from diffbench.report import (
    GridBlock,
    markdown_table,
    plot_nfe,
    plot_pareto,
    plot_strength,
    render_grid,
    sweeps_nfe,
)
from diffbench.runtime import resolve_device
from diffbench.sampling import exact_start
from diffbench.scoring import Digits, load_digits, measure_latency, noised_inputs, score_system
from diffbench.system import System, check_system, compile_seconds
from diffbench.tracking import start_run
from diffbench.translate import Translator
from diffbench.versus import attach_paired

RESULT_KEYS = (
    "view", "name", "space", "prediction", "sampler", "steps", "strength", "start_timestep",
    "start_sigma", "start_snr", "num_images",
    "sec_per_image", "sec_per_image_p50", "sec_per_image_p90", "sec_per_image_p99",
    "peak_memory_bytes", "peak_memory_method", "mse", "mse_ci95", "psnr", "psnr_ci95", "ssim",
    "ssim_ci95", "preservation", "preservation_ci95", "noised_accuracy", "noised_accuracy_ci95",
    "noised_space", "frechet_distance", "frechet_distance_ci95", "kid", "kid_ci95",
    "train_seconds", "train_cpu_seconds", "compile_seconds",
)
MATCHED_KEYS = ("match_information", "matched_timestep", "noised_accuracy_curve")
"""Added to equal-information rows."""
SNR_KEYS = ("match_snr_of_strength", "matched_timestep")
"""Added to equal-SNR rows: the strength whose VP start they match, and its timestep."""


def checkpoint_files(config: CompareConfig) -> list[str]:
    """The checkpoint files the comparison reads (the noise-aware classifiers when present)."""
    names = ["classifier.safetensors"]
    names += [f"{name}.safetensors" for name in NOISY_CLASSIFIERS.values()
              if (Path(config.checkpoints) / f"{name}.safetensors").is_file()]
    names += list(dict.fromkeys(f"{unet_stem(system)}.safetensors" for system in config.systems
                                if system.model is None))
    latent = any(system.space == "latent" for system in config.systems)
    return names + (["vae.safetensors"] if latent else [])


def unet_stem(system: SystemConfig) -> str:
    """The shipped UNet checkpoint a system runs: ``pixel``, ``latent``, ``pixel_flow``, ..."""
    return system.space if system.prediction == "eps" else f"{system.space}_{system.prediction}"


class _PythonRun(CompareConfig):
    """:func:`run`'s settings: systems may all come as System objects."""

    systems: list[SystemConfig] = Field(default_factory=list)


def run(systems: Sequence[System | dict[str, Any]], **settings: Any) -> list[dict[str, Any]]:
    """The comparison from Python: ``systems`` are System objects (a Translator, the peer,
    your own) or config mappings (``{"space": "pixel", "sampler": "mypkg.samplers:Euler"}``);
    ``settings`` are other compare config keys (``out``, ``strengths``, ``num_images``, ...)."""
    mappings = [s for s in systems if isinstance(s, dict)]
    objects = [s for s in systems if not isinstance(s, dict)]
    config = validate(_PythonRun, {**settings, "systems": mappings})
    return run_compare(config, objects)


def run_compare(config: CompareConfig, systems: Sequence[System] = ()) -> list[dict[str, Any]]:
    """Run the comparison of the config's systems, then ``systems`` (any System objects), and
    write results.json, results.md, i2i_comparison.png, pareto.png (and fidelity_vs_strength.png
    for several strengths) into ``config.out``; log to MLflow."""
    device = resolve_device(config.device)
    check_writable_dir(config.out)
    names = checkpoint_files(config)
    require_checkpoints(config.checkpoints, names)
    judge = Judge.from_checkpoints(config.checkpoints, device)
    options = {"compile": config.compile, "noise_device": config.noise_device, "tf32": config.tf32}
    built = [Translator.from_config(s, config.checkpoints, device, **options)
             for s in config.systems]
    systems = built + [*systems]
    if not systems:
        raise InputError("nothing to compare: give at least one system")
    for system in systems:
        check_system(system)
        for strength in config.strengths:
            system.start_timestep(strength)  # a ValueError now, not mid-run
    judges = [name for name in names if "classifier" in name]
    judge_hashes = checkpoint_sha256(config.checkpoints, judges)
    provenance = {"seed": config.seed, "device": str(device), "torch": torch.__version__}
    digits = load_digits(judge, max(config.num_images, config.grid_images), config.data_dir)
    scored = digits.first(config.num_images)
    grid_columns: dict[float, list[tuple[str, torch.Tensor]]] = {s: [] for s in config.strengths}
    results: list[dict[str, Any]] = []
    per_digit: list[dict[str, torch.Tensor]] = []  # per_digit[i]: results[i]'s digit scores

    def add(row: dict[str, Any], outputs: torch.Tensor | None, same_as: int | None = None):
        results.append(row)
        per_digit.append(per_digit[same_as] if same_as is not None else
                         judge.per_digit(outputs, scored.images, scored.labels))
        print_row(row)

    for system in systems:
        used = ("classifier.safetensors", f"{NOISY_CLASSIFIERS[system.space]}.safetensors")
        hashes = {name: judge_hashes[name] for name in used if name in judge_hashes}
        facts = {**provenance, **getattr(system, "settings", {}),
                 "checkpoint_sha256": {**hashes, **system.checkpoint_sha256()}}
        for strength in config.strengths:
            row, outputs = measure_row(system, judge, digits, strength, config)
            add({**row, **facts}, outputs)
            grid_columns[strength].append((system.name, outputs[: config.grid_images]))
        if config.match_information is not None:
            matched = match_information(system, judge, scored, config.match_information,
                                        config.seed)
            if matched is None:
                print(f"{system.name:>14}: its noised accuracy never equals "
                      f"{config.match_information:g} on the start-timestep grid; no "
                      f"equal-information row")
                continue
            row, outputs = measure_row(system, judge, digits, matched["strength"], config,
                                       view="equal_information")
            add({**row, **matched, **facts}, outputs)
        if config.match_snr:
            measured = {r["strength"]: i for i, r in enumerate(results)
                        if r["name"] == system.name and r["view"] == "equal_strength"}
            for strength in config.strengths:
                t = exact_start(1000, strength)  # the VP start; T = 1000 for every shipped network
                matched = strength_for_timestep(system, t)
                snr_facts = {"match_snr_of_strength": strength, "matched_timestep": t}
                if matched in measured:  # a VP system's own start: its row, not rerun
                    i = measured[matched]
                    add({**results[i], "view": "equal_snr", **snr_facts}, None, same_as=i)
                    continue
                row, outputs = measure_row(system, judge, digits, matched, config,
                                           view="equal_snr")
                add({**row, **snr_facts, **facts}, outputs)
    attach_paired(results, per_digit, config.reference, config.seed)
    files = write_results(config, results, digits, grid_columns, systems[0])
    track(config, results, files)
    return results


def measure_row(
    system: System,
    judge: Judge,
    digits: Digits,
    strength: float,
    config: CompareConfig,
    view: str = "equal_strength",
) -> tuple[dict[str, Any], torch.Tensor]:
    """One results row (fidelity on the first ``num_images`` digits, latency on the first
    ``timing_batch``, memory, training and compile seconds) and the outputs scored."""
    compiled_before = compile_seconds(system)
    scored = digits.first(config.num_images)
    result, outputs = score_system(system, judge, scored, strength, config.seed)
    row = {"view": view, **result.as_dict()}
    row.update(measure_latency(system, digits.images[: config.timing_batch], strength,
                               config.seed, config.repeats, config.warmup))
    row["train_seconds"] = system.facts["train_seconds"]
    row["train_cpu_seconds"] = system.facts.get("train_cpu_seconds")
    row["flops_per_image"] = system.flops_per_image(strength)
    row["compile_seconds"] = compile_seconds(system) - compiled_before
    return row, outputs


def print_row(row: dict[str, Any]) -> None:
    lo, hi = row["preservation_ci95"]
    print(f"{row['name']:>14} strength {row['strength']:.3g} (t={row['start_timestep']}): "
          f"{row['sec_per_image']:.4f} s/image, mse {row['mse']:.4f}, preservation "
          f"{row['preservation']:.3f} [{lo:.3f}, {hi:.3f}] (noised accuracy "
          f"{row['noised_accuracy']:.3f})")


def write_results(
    config: CompareConfig,
    results: list[dict[str, Any]],
    digits: Digits,
    grid_columns: dict[float, list[tuple[str, torch.Tensor]]],
    system: System,
) -> list[Path]:
    """The files of a comparison, each written atomically or whole; the grid's noised column
    shows the digits at ``system``'s start timestep."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = digits.images[: config.grid_images]
    blocks = []
    for strength, columns in grid_columns.items():
        t = system.start_timestep(strength)
        noised = noised_inputs(system, sources, strength, config.seed)
        blocks.append(GridBlock(
            title=f"strength {strength:g}",
            labels=["source", f"noised t={t}", *(name for name, _ in columns)],
            columns=[sources, noised, *(images for _, images in columns)],
        ))
    files = [
        write_atomic_text(out / "results.json", json.dumps(results, indent=2) + "\n"),
        write_atomic_text(out / "results.md", results_markdown(results)),
        out / "i2i_comparison.png",
        out / "pareto.png",
    ]
    render_grid(blocks, files[2])
    plot_pareto(results, files[3])
    if len(config.strengths) > 1:
        files.append(out / "fidelity_vs_strength.png")
        plot_strength([r for r in results if r["view"] == "equal_strength"], files[-1])
    for view, name in (("equal_strength", "fidelity_vs_nfe.png"),
                       ("equal_snr", "fidelity_vs_nfe_equal_snr.png")):
        rows = [r for r in results if r["view"] == view]
        if rows and sweeps_nfe(rows):
            files.append(out / name)
            plot_nfe(rows, files[-1])
    return files


def results_markdown(results: list[dict[str, Any]]) -> str:
    """The equal-strength table, then (when there are any) the equal-information one."""
    text = markdown_table([r for r in results if r["view"] == "equal_strength"])
    if sweeps_nfe(results):
        text += "\n" + fewest_nfe_markdown(fewest_nfe(results))
    matched = [r for r in results if r["view"] == "equal_information"]
    if matched:
        text += (f"\n## Equal information: noised accuracy {matched[0]['match_information']:g} "
                 f"in each system's own space\n\n" + markdown_table(matched))
    same_snr = [r for r in results if r["view"] == "equal_snr"]
    if same_snr:
        text += ("\n## Equal SNR: each system where its input is as noisy as a VP input at "
                 "t = int(strength * 1000) - 1\n\n" + markdown_table(same_snr))
        if sweeps_nfe(same_snr):
            text += "\n" + fewest_nfe_markdown(fewest_nfe(results, view="equal_snr"))
    return text


def track(config: CompareConfig, results: list[dict[str, Any]], files: list[Path]) -> None:
    """One MLflow run with every metric and the files, plus a nested run per system whose
    metrics are stepped by strength x 100 (so MLflow charts them against strength)."""
    with start_run(config.experiment, run_name="compare", params=config.model_dump()) as run:
        if not run.enabled:
            return  # tracking is unavailable and has warned once; the files are on disk
        for row in results:
            view = "" if row["view"] == "equal_strength" else "matched/"
            prefix = f"{row['name']}/{view}s{row['strength']:g}/"
            run.log_metrics({prefix + k: v for k, v in row.items()
                             if isinstance(v, int | float) and not isinstance(v, bool)})
        for path in files:
            run.log_artifact(path)
        for name in dict.fromkeys(row["name"] for row in results):
            rows = [row for row in results
                    if row["name"] == name and row["view"] == "equal_strength"]
            params = {k: rows[0][k] for k in ("space", "sampler")}
            with start_run(config.experiment, run_name=name, params=params, nested=True) as sub:
                for row in rows:
                    sub.log_metrics({k: v for k, v in row.items()
                                     if isinstance(v, int | float) and not isinstance(v, bool)},
                                    step=round(row["strength"] * 100))
