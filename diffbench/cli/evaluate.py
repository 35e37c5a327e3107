"""``diffbench evaluate``: the shipped checkpoints' fidelity, as JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffbench.cli.common import (
    UsageError,
    add_checkpoints,
    add_data_dir,
    add_device,
    add_json,
    add_overwrite,
    add_seed,
    check_strengths,
    digits,
    emit,
    positive_int,
)
from diffbench.core.errors import InputError

HELP = "fidelity of the shipped checkpoints as JSON"
CHECKPOINTS = ["classifier", "pixel", "latent", "vae"]
"""The checkpoints `evaluate` loads (``<name>.safetensors``)."""
MAX_SAMPLES = 10_000
"""Most samples `evaluate` generates from noise (its classifier's judgement of them is over a
test split of this size)."""


def samples(text: str) -> int:
    """A count of generated samples: 1 to MAX_SAMPLES."""
    value = positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SAMPLES} samples, got {value}")
    return value


def sampler_name(text: str) -> str:
    """A registered or installed sampler's name, or a ``package.module:Name`` that loads as
    one."""
    from diffbench.sampling import sampler_class

    try:
        sampler_class(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_arguments(evaluate: argparse.ArgumentParser) -> None:
    add_checkpoints(evaluate, "the classifier, pixel, latent and vae ones")
    evaluate.add_argument("--out", type=Path, default=Path("results/evaluate.json"), metavar="FILE",
                          help="the JSON report")
    add_data_dir(evaluate)
    add_device(evaluate, default="auto")
    evaluate.add_argument("--num-images", type=digits, metavar="N", default=1000,
                          help="test digits per system at the main strength (0.3)")
    evaluate.add_argument("--ddpm-images", type=digits, metavar="N", default=256,
                          help="test digits for pixel DDPM-1000 at the main strength")
    evaluate.add_argument("--sweep-images", type=digits, metavar="N", default=128,
                          help="test digits per system at the other strengths")
    evaluate.add_argument("--sweep-ddpm-images", type=digits, metavar="N", default=32,
                          help="test digits for pixel DDPM-1000 at the other strengths")
    evaluate.add_argument("--sweep", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9],
                          metavar="S", help="strengths of the sweep (default 0.1 0.3 0.5 0.7 0.9)")
    evaluate.add_argument("--generation-samples", type=samples, metavar="N", default=1000,
                          help="samples each system generates from pure noise")
    add_seed(evaluate, default=0)
    evaluate.add_argument("--samplers", nargs="+", type=sampler_name, metavar="NAME",
                          help="samplers to evaluate in each space: registered or installed "
                               "names, or 'package.module:Name' (default: every registered "
                               "and installed sampler: diffbench list samplers)")
    add_overwrite(evaluate, "an existing --out file")
    evaluate.add_argument("--update-cards", action="store_true",
                          help="write the numbers into the model cards beside the checkpoints")
    add_json(evaluate)


def check(args: argparse.Namespace) -> None:
    """The output file, the sweep and every checkpoint (each loads into its model) now, not
    after minutes of work."""
    from diffbench.core.files import check_writable_dir
    from diffbench.core.outputs import refuse_earlier_run
    from diffbench.io.checkpoints import load_model, require_checkpoints

    check_strengths(tuple(args.sweep), "--sweep")
    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; allowed: a file path for the JSON report")
    refuse_earlier_run(args.out, [args.out], overwrite=args.overwrite)
    check_writable_dir(args.out.parent)
    names = [f"{name}.safetensors" for name in CHECKPOINTS]
    require_checkpoints(args.checkpoints, names)
    for name in names:
        load_model(args.checkpoints / name)
    if args.update_cards:
        check_writable_dir(args.checkpoints)


def run(args: argparse.Namespace) -> None:
    from diffbench.core.resources import checkpoints_dir
    from diffbench.core.runtime import resolve_device
    from diffbench.evaluate import evaluate, update_cards, write_report

    device = str(resolve_device(args.device))
    args.checkpoints = args.checkpoints or checkpoints_dir()
    check(args)
    report = evaluate(
        args.checkpoints, args.data_dir, device, args.num_images,
        args.ddpm_images, sweep_images=args.sweep_images,
        sweep=tuple(args.sweep), sweep_ddpm_images=args.sweep_ddpm_images,
        generation_samples=args.generation_samples, seed=args.seed,
        samplers=tuple(args.samplers) if args.samplers else None,
    )
    write_report(report, args.out)
    if args.update_cards:
        update_cards(report, args.checkpoints, args.out)
    lines = [f"{'met ' if goal['met'] else 'MISS'}  {goal['goal']}: {goal['value']:.4f} (goal "
             f"{goal['target']})" for goal in report["goals"]]
    emit(args, {"out": str(args.out), "goals": report["goals"]}, [*lines, f"wrote {args.out}"])
