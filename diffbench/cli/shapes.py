"""``diffbench shapes``: the latent-shape sweep, one folder per latent shape's system."""

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
    digits,
    emit,
    positive_int,
)

HELP = "the latent-shape sweep: one folder per latent shape's trained system"


def add_arguments(shapes: argparse.ArgumentParser) -> None:
    shapes.add_argument("folders", type=Path, nargs="+", metavar="FOLDER",
                        help="holds vae, latent and latent_noisy_classifier .safetensors")
    add_checkpoints(shapes, "the classifiers and the pixel UNet to compare against")
    shapes.add_argument("--out", type=Path, default=Path("results/latent_shapes.md"),
                        metavar="FILE",
                        help="Markdown table; the .png plot and .json numbers go beside it")
    shapes.add_argument("--num-images", type=digits, metavar="N", default=512,
                        help="test digits scored per system")
    shapes.add_argument("--rounds", type=positive_int, metavar="N", default=7,
                        help="timed calls per system (batch 64)")
    add_data_dir(shapes)
    add_device(shapes, default="auto")
    add_seed(shapes, default=0)
    add_overwrite(shapes, "an existing --out table and the .png and .json beside it")
    add_json(shapes)


def run(args: argparse.Namespace) -> None:
    from diffbench.core.files import check_writable_dir
    from diffbench.core.outputs import refuse_earlier_run
    from diffbench.core.resources import checkpoints_dir
    from diffbench.core.runtime import resolve_device
    from diffbench.io.checkpoints import require_checkpoints
    from diffbench.shapes import FILES, run_sweep, write_sweep

    if args.out.suffix != ".md":
        raise UsageError(f"--out {args.out}: allowed: a .md file path")
    refuse_earlier_run(args.out, [args.out.with_suffix(s) for s in (".md", ".json", ".png")],
                       overwrite=args.overwrite)
    check_writable_dir(args.out.parent)
    args.checkpoints = args.checkpoints or checkpoints_dir()
    require_checkpoints(args.checkpoints, ["classifier.safetensors", "pixel.safetensors"])
    for folder in args.folders:
        require_checkpoints(folder, list(FILES))
    sweep = run_sweep(args.folders, args.checkpoints, args.num_images, rounds=args.rounds,
                      device=str(resolve_device(args.device)), data_dir=args.data_dir,
                      seed=args.seed)
    paths = write_sweep(sweep, args.out)
    emit(args, {"files": [str(path) for path in paths], "sweep": sweep.as_dict()},
         [f"wrote {path}" for path in paths])
