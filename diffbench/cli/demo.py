"""``diffbench demo``: DDPM-1000 against DDIM-50 with a training-free denoiser."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from diffbench.cli.common import (
    add_data_dir,
    add_json,
    add_seed,
    check_strengths,
    emit,
    positive_int,
)

HELP = "DDPM-1000 vs DDIM-50 image-to-image on real digits with a training-free denoiser"


def add_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--out", type=Path, default=Path("results"), metavar="DIR",
                      help="output folder")
    add_data_dir(demo)
    demo.add_argument("--num-images", type=positive_int, metavar="N", default=8,
                      help="test digits translated and shown in the grid")
    demo.add_argument("--num-references", type=positive_int, metavar="N", default=10_000,
                      help="training digits the empirical denoiser knows")
    demo.add_argument("--strength", type=float, action="append",
                      help="noise strength in (0, 1]; repeatable (default 0.3 and 0.5)")
    add_seed(demo, default=0)
    add_json(demo)


def run(args: argparse.Namespace) -> None:
    from diffbench.core.files import check_writable_dir
    from diffbench.demo import run_demo

    strengths = tuple(args.strength or (0.3, 0.5))
    check_strengths(strengths)
    check_writable_dir(args.out)
    results = run_demo(args.out, args.data_dir, args.num_images, args.num_references,
                       strengths, args.seed)
    header = f"{'sampler':<10} {'strength':>8} {'steps':>6} {'sec/image':>10} {'mse':>8}"
    lines = [f"{r.sampler:<10} {r.strength:>8.2f} {r.steps:>6} {r.sec_per_image:>10.4f} "
             f"{r.mse:>8.4f}" for r in results]
    grid = args.out / "demo_grid.png"
    emit(args, {"rows": [dataclasses.asdict(r) for r in results], "grid": str(grid)},
         [header, *lines, f"wrote {grid}"])
