"""``diffbench evaluate``: the fidelity of the shipped checkpoints on MNIST test digits.

Measures, and writes as one JSON file: classifier accuracy; VAE reconstruction; image-to-image
fidelity of the four systems (pixel DDPM-1000 / DDIM-50, latent DDPM-1000 / DDIM-50) at a main
strength and a sweep of strengths, each beside the noised accuracy in its own space (every
registered sampler in each space, so a newly registered sampler is evaluated too); and generation
from pure noise. Every figure carries its 95% interval (``<name>_ci95``: bootstrap over digits
for mse, psnr and ssim, Wilson for shares, :mod:`diffbench.measure.feature_distance` for the Frechet
distance and KID). Source digits
are the first test digits; Frechet-distance and KID references are the last 5,000 test digits,
disjoint from the sources for up to 5,000 of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from diffbench.core.environment import environment_facts
from diffbench.core.files import write_atomic_text
from diffbench.core.resources import checkpoints_dir
from diffbench.core.system import SPACES
from diffbench.io.checkpoints import load_metadata
from diffbench.io.data import load_mnist
from diffbench.measure.feature_distance import FeatureReference
from diffbench.measure.metrics import Judge
from diffbench.measure.scoring import (
    LATENT_MAX_MSE_RATIO,
    LATENT_MAX_PRESERVATION_GAP,
    accuracy,
    load_digits,
    score_system,
    vae_reconstruction,
)
from diffbench.measure.scoring import (
    REFERENCE_SLICE as REFERENCE_SLICE,  # scoring lived here: its names
)
from diffbench.measure.scoring import Digits as Digits  # stay importable from diffbench.evaluate
from diffbench.measure.scoring import noised_inputs as noised_inputs
from diffbench.measure.scoring import translate as translate
from diffbench.results.report import cell
from diffbench.results.row import SCHEMA_VERSION, column_format
from diffbench.sampling import SAMPLERS, sampler_class
from diffbench.sampling.prediction import PREDICTIONS
from diffbench.systems.translate import Translator


def systems(samplers: tuple[str, ...] | None = None) -> list[tuple[str, str, str]]:
    """(space, sampler, prediction) of every system evaluated: each space with each of
    ``samplers`` (default: every registered sampler), the flow samplers on the flow networks."""
    return [(space, sampler, sampler_class(sampler).predictions[0])
            for space in SPACES for sampler in samplers or tuple(SAMPLERS)]


GENERATORS = (("ddim", "eps"), ("flow-euler", "flow"), ("consistency", "consistency"),
              ("meanflow", "meanflow"))
"""The samplers whose generation from pure noise is scored, one per network, at their default
steps (DDIM-50, RF-Euler-50; CM-1 and MF-1, one network evaluation)."""


@torch.inference_mode()
def generation(translator: Translator, judge: Judge, num_samples: int, seed: int,
               reference: FeatureReference | None = None) -> dict:
    """Samples from pure noise with the translator's sampler (strength 1.0 from noise alone):
    the judge's confident share and class spread, and with ``reference`` (held-out real digits)
    the Frechet distance and KID of the samples' features to it, each with its interval."""
    shape = (num_samples, *translator.noise_shape)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    samples = torch.cat([translator.generate(batch).cpu() for batch in noise.split(250)])
    scores = {"name": translator.name, "space": translator.space,
              "prediction": translator.sampler.prediction, "nfe": translator.plan(1.0).nfe,
              "num_samples": num_samples, **judge.generation_quality(samples)}
    if reference is not None:
        scores |= reference.score(judge.features(samples), torch.Generator().manual_seed(seed))
    return scores


def evaluate(
    checkpoints: str | Path | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    num_images: int = 1000,
    ddpm_images: int = 256,
    main_strength: float = 0.3,
    sweep: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
    sweep_images: int = 128,
    sweep_ddpm_images: int = 32,
    generation_samples: int = 1000,
    seed: int = 0,
    progress: bool = True,
    samplers: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """All fidelity numbers of the shipped checkpoints (see the module docstring); default:
    the shipped ones."""
    checkpoints = Path(checkpoints or checkpoints_dir())
    judge = Judge.from_checkpoints(checkpoints, device)
    test = load_mnist("test", data_dir)
    digits = load_digits(judge, max(num_images, ddpm_images, sweep_images), data_dir)
    test_accuracy = accuracy(judge, test.images, test.labels)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,  # of its image-to-image rows (diffbench.results.row)
        "checkpoints": str(checkpoints),
        "device": device,
        "seed": seed,
        "environment": environment_facts(),
        "classifier": {"test_accuracy": test_accuracy["value"],
                       "test_accuracy_ci95": test_accuracy["ci95"],
                       "num_images": len(test.images)},
        "vae": vae_reconstruction(checkpoints, judge, test.images, test.labels, seed),
        "train_seconds": {p.stem: load_metadata(p).get("train_seconds")
                          for p in sorted(checkpoints.glob("*.safetensors"))
                          if not p.name.endswith(".state.safetensors")},
    }
    results = []
    for space, sampler, prediction in systems(samplers):
        translator = Translator.from_checkpoints(checkpoints, space, sampler, device=device,
                                                 prediction=prediction)
        # Pixel samplers that run every timestep (DDPM-1000) score fewer digits: they are slow.
        slow = space == "pixel" and sampler_class(sampler).default_steps is None
        for strength in sorted({main_strength, *sweep}):
            main = strength == main_strength
            count = (ddpm_images if slow else num_images) if main else (
                sweep_ddpm_images if slow else sweep_images)
            subset = digits.first(count)
            result, _, _ = score_system(translator, judge, subset, strength, seed, progress)
            results.append(result)
    report["img2img"] = results
    report["generation"] = [
        generation(Translator.from_checkpoints(checkpoints, space, sampler, device=device,
                                               prediction=prediction),
                   judge, generation_samples, seed, digits.reference)
        for space in ("pixel", "latent") for sampler, prediction in GENERATORS
    ]
    report["goals"] = check_goals(report, main_strength)
    return report


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    return write_atomic_text(path, json.dumps(report, indent=2) + "\n")


CARD_SECTION = "## Measured fidelity"


CARD_COLUMNS = [(key, column_format(key)) for key in (
    "mse", "psnr", "ssim", "preservation", "noised_accuracy", "frechet_distance", "kid")]
"""The model cards' fidelity columns, in the results table's formats."""


def fidelity_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| system | strength | start t | digits | MSE | PSNR dB | SSIM | preservation | "
             "noised acc. | Frechet | KID |", "|" + " --- |" * 11]
    lines += [
        f"| {r['name']} | {r['strength']:g} | {r['start_timestep']} | {r['num_images']} | "
        + " | ".join(cell(r, key, fmt) for key, fmt in CARD_COLUMNS) + " |"
        for r in rows
    ]
    note = ("Brackets: 95% intervals (bootstrap over digits; Wilson for shares; Frechet: "
            "half-sampling; KID: bootstrap over the outputs; see docs/methodology.md).")
    return "\n".join(lines) + "\n\n" + note


def card_sections(report: dict[str, Any]) -> dict[str, str]:
    """Card name -> the Markdown of its measured-fidelity section, from one report."""
    rows = report["img2img"]
    vae = report["vae"]

    def share(row: dict[str, Any], key: str, fmt: str = "{:.1%}") -> str:
        return cell(row, key, fmt)

    def generated(g: dict[str, Any]) -> str:
        return (f"Generation from pure noise ({g['name']}, {g['num_samples']} samples): "
                f"{share(g, 'confident_share')} classified with probability >= 0.9; digit "
                f"shares from {share(g, 'min_class_share')} to {share(g, 'max_class_share')} "
                f"(95% Wilson intervals).")

    def noised(system: str, space: str) -> str:
        return (f"Noised accuracy (accuracy on the test digits noised to x_t in {space} space; "
                f"95% Wilson intervals):\n\n"
                + "\n".join(f"- strength {r['strength']:g} (t = {r['start_timestep']}): "
                            f"{share(r, 'noised_accuracy', '{:.3f}')}"
                            for r in rows if r["name"] == system))

    cards = {
        "classifier": f"Test accuracy on all {report['classifier']['num_images']} MNIST test "
                      f"digits: {share(report['classifier'], 'test_accuracy', '{:.2%}')} (95% "
                      f"Wilson interval).",
        "vae": f"Reconstructions of all {vae['num_images']} test digits: MSE "
               f"{cell(vae, 'reconstruction_mse', '{:.4f}')}, preservation "
               f"{share(vae, 'preservation', '{:.2%}')} (95% intervals).",
    }
    names = {r["name"] for r in rows}  # the noisy classifiers read at DDIM-50's starts
    for card, system, space in (("noisy_classifier", "DDIM-50", "pixel"),
                                ("latent_noisy_classifier", "LDM-DDIM-50", "latent")):
        if system in names:
            cards[card] = noised(system, space)
    for space in SPACES:  # each denoising network's card: its rows and its generation
        for prediction in PREDICTIONS:
            here = [r for r in rows if r["space"] == space and r["prediction"] == prediction]
            if not here:
                continue
            body = fidelity_table(here)
            body += "".join("\n\n" + generated(g) for g in report["generation"]
                            if (g.get("space"), g.get("prediction")) == (space, prediction))
            cards[f"{space}{'' if prediction == 'eps' else '_' + prediction}"] = body
    return cards


def update_cards(report: dict[str, Any], checkpoints: str | Path,
                 source: str | Path = "evaluation.json") -> list[Path]:
    """Replace (or add) the measured-fidelity section of each model card with this report's
    numbers (written to ``source``), so the cards quote what ``diffbench evaluate`` measured."""
    updated = []
    for name, body in card_sections(report).items():
        path = Path(checkpoints) / f"{name}.md"
        if not path.is_file():
            continue
        text = path.read_text().split(CARD_SECTION)[0].rstrip()
        note = (f"Measured by `diffbench evaluate` on {report['device']} (seed "
                f"{report['seed']}; see {Path(source).name} beside this card).")
        write_atomic_text(path, f"{text}\n\n{CARD_SECTION}\n\n{note}\n\n{body}\n")
        updated.append(path)
    return updated


# (system name, metric, comparison, target) at the main strength: what the shipped checkpoints
# are trained to reach.
IMG2IMG_GOALS = [
    ("DDIM-50", "preservation", ">=", 0.97),
    ("DDIM-50", "mse", "<=", 0.04),
    ("DDPM-1000", "preservation", ">=", 0.96),
    ("DDPM-1000", "mse", "<=", 0.075),
    ("LDM-DDIM-50", "preservation", ">=", 0.95),
    ("LDM-DDPM-1000", "preservation", ">=", 0.95),
]




def check_goals(report: dict[str, Any], main_strength: float = 0.3) -> list[dict[str, Any]]:
    """Every fidelity goal with its measured value and whether it holds."""
    checks = [
        ("classifier test accuracy", report["classifier"]["test_accuracy"], ">=", 0.99),
        ("VAE reconstruction preservation", report["vae"]["preservation"], ">=", 0.98),
    ]
    main = {r["name"]: r for r in report["img2img"] if r["strength"] == main_strength}
    checks += [  # the goals of the systems evaluated (see ``samplers``)
        (f"{name} {metric} at strength {main_strength}", main[name][metric], op, target)
        for name, metric, op, target in IMG2IMG_GOALS if name in main
    ]
    if {"DDIM-50", "LDM-DDIM-50"} <= set(main):  # the latent system against pixel DDIM-50
        pixel, latent = main["DDIM-50"], main["LDM-DDIM-50"]
        checks += [
            (f"LDM-DDIM-50 preservation gap to DDIM-50 at strength {main_strength}",
             pixel["preservation"] - latent["preservation"], "<=", LATENT_MAX_PRESERVATION_GAP),
            (f"LDM-DDIM-50 mse / DDIM-50 mse at strength {main_strength}",
             latent["mse"] / pixel["mse"], "<=", LATENT_MAX_MSE_RATIO),
        ]
    for gen in report["generation"]:
        checks += [
            (f"{gen['name']} generation: confident share", gen["confident_share"], ">=", 0.85),
            (f"{gen['name']} generation: rarest digit share", gen["min_class_share"], ">=", 0.05),
            (f"{gen['name']} generation: commonest digit share", gen["max_class_share"], "<=",
             0.15),
        ]
    return [
        {"goal": goal, "value": value, "target": f"{op} {target}",
         "met": value >= target if op == ">=" else value <= target}
        for goal, value, op, target in checks
    ]
