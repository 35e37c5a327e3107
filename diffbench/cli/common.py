"""What every command shares: a parser whose errors are one line, the argument types, the
common options (``--data-dir``, ``--device``, ``--seed``, ``--overwrite``) and the ``error:``
line. Imports no torch, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import sys

from diffbench.core.choices import DEVICES, MAX_SCORED_DIGITS, MAX_SEED
from diffbench.core.errors import InputError


class UsageError(Exception):
    """A command line argparse rejects (its message is the `error:` line)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one `error:` line and exit status 2 (via `main`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def print_error(message: object) -> None:
    """Print ``message`` as one ``error:`` line on stderr."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)


def seed(text: str) -> int:
    """A seed in [0, MAX_SEED]."""
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, {MAX_SEED}], got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def digits(text: str) -> int:
    """A count of test digits to score: 1 to MAX_SCORED_DIGITS (the rest are the reference)."""
    value = positive_int(text)
    if value > MAX_SCORED_DIGITS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_SCORED_DIGITS} digits (the test digits past them are the "
            f"held-out Frechet and KID reference), got {value}")
    return value


def check_strengths(strengths: tuple[float, ...], option: str | None = None) -> None:
    """Each strength in (0, 1] and giving DDIM-50 and DDPM-1000 a step: an error (naming
    ``option`` when given) now, not after minutes of work."""
    from diffbench.sampling import DEFAULT_STEPS, img2img_num_steps

    for strength in strengths:
        try:
            img2img_num_steps(DEFAULT_STEPS, strength)
        except InputError as error:
            if option is None:
                raise
            raise UsageError(f"{option}: {error}") from None


def add_data_dir(command: argparse.ArgumentParser, downloads: bool = False) -> None:
    """``--data-dir``; ``downloads``: the command downloads MNIST when none is found."""
    default = "$DIFFBENCH_DATA_DIR or download" if downloads else "$DIFFBENCH_DATA_DIR"
    command.add_argument("--data-dir", help=f"MNIST folder (default: {default})")


def add_device(command: argparse.ArgumentParser, default: str | None = None) -> None:
    command.add_argument("--device", choices=DEVICES, default=default)


def add_seed(command: argparse.ArgumentParser, default: int | None = None,
             help: str | None = None) -> None:
    command.add_argument("--seed", type=seed, default=default, help=help)


def add_overwrite(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--overwrite", action="store_true",
                         help=f"replace {what} (without it, an earlier run is refused)")
