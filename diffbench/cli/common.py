"""What every command shares: a parser whose errors are one line and whose help gives every
option's default, the argument types, the common options (``--data-dir``, ``--device``,
``--seed``, ``--checkpoints``, ``--overwrite``, ``--json``), the ``error:`` line and the
``diffbench`` logger's handler. Imports no torch, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from diffbench.core.choices import DEVICES, MAX_SCORED_DIGITS, MAX_SEED
from diffbench.core.errors import InputError


class UsageError(Exception):
    """A command line argparse rejects (its message is the `error:` line)."""


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends each option's text with ``(default: X)``, unless the text already says
    its default or there is none to say (None, False, suppressed)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or default is None
                or default is False or default == argparse.SUPPRESS or default == []):
            return text
        if isinstance(default, list | tuple):
            default = " ".join(map(str, default))
        shown = str(default).replace("%", "%%")  # argparse %-formats the help text
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one `error:` line and exit status 2 (via `main`), and
    whose help gives each option's default (:class:`DefaultsFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

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


DATA_DIR_HELP = ("MNIST folder (default: $DIFFBENCH_DATA_DIR, else the shipped test split and "
                 "first 10,000 training digits; a full training split, when needed and not "
                 "given, is downloaded into the user cache)")
"""What happens without ``--data-dir``: :mod:`diffbench.io.data`'s order, first match wins."""


def add_data_dir(command: argparse.ArgumentParser) -> None:
    command.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)


def add_device(command: argparse.ArgumentParser, default: str | None = None) -> None:
    command.add_argument("--device", choices=DEVICES, default=default,
                         help="where the networks run: auto picks CUDA when there is one"
                              + ("" if default else " (default: the config's value)"))


def add_seed(command: argparse.ArgumentParser, default: int | None = None,
             help: str | None = None) -> None:
    text = help or "seed of every random draw" + (
        "" if default is not None else " (default: the config's value)")
    command.add_argument("--seed", type=seed, default=default, help=text)


def add_checkpoints(command: argparse.ArgumentParser, what: str,
                    default: str = "the shipped checkpoints") -> None:
    """``--checkpoints DIR``: the folder of trained ``.safetensors`` the command reads."""
    command.add_argument("--checkpoints", type=Path, metavar="DIR",
                         help=f"folder of trained checkpoints: {what} (default: {default})")


def add_overwrite(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--overwrite", action="store_true",
                         help=f"replace {what} (without it, an earlier run is refused)")


def add_json(command: argparse.ArgumentParser) -> None:
    command.add_argument("--json", action="store_true",
                         help="print one JSON object on stdout instead of the text (for "
                              "scripts; log lines stay on stderr)")


def emit(args: argparse.Namespace, facts: dict[str, Any], lines: Iterable[str]) -> None:
    """A command's result on stdout: ``facts`` as one JSON line with ``--json``, else the text
    ``lines`` (the same content, for people)."""
    if getattr(args, "json", False):
        print(json.dumps(facts, default=str))
    else:
        for line in lines:
            print(line)


class LogHandler(logging.Handler):
    """The ``diffbench`` logger's lines on stderr through ``tqdm.write``, so a line logged
    while a progress bar is open is printed above the bar, not through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's convention: a failed log line never stops the work
            self.handleError(record)


def configure_logging(level: int) -> logging.Logger:
    """The ``diffbench`` logger at ``level`` with one :class:`LogHandler` (``%(message)s``),
    replacing one an earlier call added."""
    logger = logging.getLogger("diffbench")
    for handler in [h for h in logger.handlers if isinstance(h, LogHandler)]:
        logger.removeHandler(handler)
    handler = LogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
