"""The ``diffbench`` command, one module per command (its options and its run) beside the
shared arguments of :mod:`diffbench.cli.common`. Bad input exits with status 2 and one
``error:`` line on stderr (naming the value and what is allowed, no traceback), found before
any long work starts.

Only the named command's options are built and its work is imported only when it runs, so
no ``--help`` imports torch. Progress and status lines go through the ``diffbench`` logger to
stderr (``-q``: warnings only, ``-v``: debug too); stdout holds each command's result.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
from collections.abc import Collection
from types import ModuleType

from diffbench.cli.common import Parser, UsageError, configure_logging, print_error
from diffbench.core.errors import InputError

COMMANDS = ("demo", "train", "evaluate", "shapes", "compare", "report", "merge", "ab", "history",
            "list")
"""The commands, in the order ``diffbench --help`` lists them; each is ``diffbench.cli.<name>``
with ``HELP``, ``add_arguments(parser)`` and ``run(args)``."""


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"diffbench.cli.{name}")


def build_parser(with_options: Collection[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser of every command, with the options of the commands in ``with_options`` (the
    others are listed with their help alone)."""
    parser = Parser(
        prog="diffbench",
        description="Compare DDPM, DDIM and latent diffusion on MNIST image-to-image translation.",
    )
    parser.add_argument("--version", action="version", version=f"diffbench {version()}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", dest="log_level", action="store_const",
                          const=logging.WARNING, default=logging.INFO,
                          help="log warnings and errors only (default: progress lines too)")
    loudness.add_argument("-v", "--verbose", dest="log_level", action="store_const",
                          const=logging.DEBUG, help="log debug lines too")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = command_module(name)
        command = commands.add_parser(name, help=module.HELP)
        if name in with_options:
            module.add_arguments(command)
    return parser


def version() -> str:
    """The installed distribution's version (its metadata, so no import of the package's
    modules)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("diffbench")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def named_command(argv: list[str]) -> list[str]:
    """The command ``argv`` names (its first word that is no option), if any."""
    return [word for word in argv if not word.startswith("-")][:1]


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 for bad input (:class:`InputError`), 1 with the
    traceback for anything else, 128 + N when stopped by signal N."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(named_command(argv)).parse_args(argv)
        configure_logging(args.log_level)
        args.command_line = shlex.join(["diffbench", *argv])
        status = command_module(args.command).run(args)
    except (UsageError, InputError) as error:  # bad input only: MNISTNotFoundError included
        print_error(error)
        return 2
    except KeyboardInterrupt as interrupt:
        print_error(str(interrupt) or "interrupted (SIGINT); files already written are complete")
        return 128 + 2
    except OSError as error:  # the machine, not the input: a full disk, a vanished folder
        print_error(f"{error}; files already written are complete (every write is atomic)")
        return 1
    except Exception as error:  # a bug, CUDA out of memory, ...: keep the traceback (exit 1)
        status = getattr(error, "exit_status", None)  # except train's TrainingInterrupted
        if status is None:
            raise
        print_error(error)
        return status
    return status or 0


__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]
