"""``diffbench train``: one model of a kind, from its YAML config."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffbench.cli.common import add_data_dir, add_device, add_overwrite, add_seed, positive_int
from diffbench.core.choices import MODEL_KINDS

HELP = "train one model (a kind below)"


def add_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("kind", choices=MODEL_KINDS, help="the model to train")
    train.add_argument("--config", type=Path, metavar="YAML",
                       help="the training config (default: configs/train_<kind>.yaml)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (dotted for nested keys); repeatable "
                            "(default: none)")
    train.add_argument("--steps", type=positive_int, metavar="N",
                       help="optimizer steps, per process under DDP (default: the config's value)")
    train.add_argument("--batch-size", type=positive_int, metavar="N",
                       help="images per step and process (default: the config's value)")
    train.add_argument("--out", metavar="DIR",
                       help="folder for the checkpoint, its training state and card (default: "
                            "the config's value)")
    add_data_dir(train)
    add_device(train)
    add_seed(train)
    train.add_argument("--resume", action="store_true",
                       help="continue from the training state in --out")
    add_overwrite(train, "a checkpoint of the same name in --out")
    train.add_argument("--stop-at", type=positive_int, metavar="STEP",
                       help="stop after this step, checkpointed (continue later with --resume; "
                            "default: run to --steps)")


def run(args: argparse.Namespace) -> None:
    from diffbench.io.config import load_train_config  # a bad config answers before the job

    config = load_train_config(
        args.kind, args.config, args.overrides, steps=args.steps, batch_size=args.batch_size,
        out=args.out, data_dir=args.data_dir, device=args.device, seed=args.seed,
    )
    from diffbench.train import train

    train(config, resume=args.resume, stop_at=args.stop_at, command=args.command_line,
          overwrite=args.overwrite)
