"""The ``diffbench`` command. Bad input exits with status 2 and one ``error:`` line."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from diffbench.data import MNISTNotFoundError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffbench",
        description="Compare DDPM, DDIM and latent diffusion on MNIST image-to-image translation.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="DDPM-1000 vs DDIM-50 image-to-image on real digits with a training-free denoiser",
    )
    demo.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    demo.add_argument("--data-dir", help="MNIST folder (default: $DIFFBENCH_DATA_DIR or download)")
    demo.add_argument("--num-images", type=_positive_int, default=8)
    demo.add_argument(
        "--num-references",
        type=_positive_int,
        default=10_000,
        help="training digits the empirical denoiser knows",
    )
    demo.add_argument(
        "--strength",
        type=float,
        action="append",
        help="noise strength in (0, 1]; repeatable (default 0.3 and 0.5)",
    )
    demo.add_argument("--seed", type=int, default=0)

    train = commands.add_parser("train", help="train one model: pixel, vae, latent or classifier")
    train.add_argument("kind", choices=["pixel", "vae", "latent", "classifier"])
    train.add_argument(
        "--config", type=Path, help="YAML config (default: configs/train_<kind>.yaml)"
    )
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (dotted for nested keys); repeatable")
    train.add_argument("--steps", type=_positive_int)
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--out", help="folder for the checkpoint, its training state and card")
    train.add_argument("--data-dir", help="MNIST folder (default: $DIFFBENCH_DATA_DIR or download)")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"])
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", action="store_true",
                       help="continue from the training state in --out")
    train.add_argument("--stop-at", type=_positive_int, metavar="STEP",
                       help="stop after this step, checkpointed (continue later with --resume)")
    return parser


def _train(args: argparse.Namespace) -> None:
    from diffbench.config import load_train_config
    from diffbench.train import train

    config = load_train_config(
        args.kind, args.config, args.overrides, steps=args.steps, batch_size=args.batch_size,
        out=args.out, data_dir=args.data_dir, device=args.device, seed=args.seed,
    )
    train(config, resume=args.resume, stop_at=args.stop_at, command=args.command_line)


def _demo(args: argparse.Namespace) -> None:
    from diffbench.demo import run_demo

    results = run_demo(
        args.out,
        args.data_dir,
        args.num_images,
        args.num_references,
        tuple(args.strength or (0.3, 0.5)),
        args.seed,
    )
    print(f"{'sampler':<10} {'strength':>8} {'steps':>6} {'sec/image':>10} {'mse':>8}")
    for r in results:
        row = f"{r.sampler:<10} {r.strength:>8.2f} {r.steps:>6} {r.sec_per_image:>10.4f}"
        print(f"{row} {r.mse:>8.4f}")
    print(f"wrote {args.out / 'demo_grid.png'}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["diffbench", *argv])
    try:
        {"demo": _demo, "train": _train}[args.command](args)
    except (ValueError, MNISTNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
