"""Output folders are never overwritten by surprise.

A job that finds an earlier run's files where it would write refuses, naming them, unless told
``--resume`` (continue that run, where the job can) or ``--overwrite`` (replace it). A missing
or empty folder, or one holding only other files, is fine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from diffbench.core.errors import InputError


class EarlierRunError(InputError):
    """The output already holds an earlier run and neither --resume nor --overwrite was given."""


def refuse_earlier_run(target: str | Path, files: Iterable[str | Path], *, overwrite: bool,
                       resume: bool = False, resumable: bool = False) -> None:
    """Raise :class:`EarlierRunError` naming ``target`` if any of ``files`` (an earlier run's
    outputs) exists, unless ``overwrite`` or ``resume``; ``resumable``: the job has --resume."""
    if overwrite and resume:
        raise InputError("--resume and --overwrite exclude each other; allowed: one of them")
    found = [Path(f) for f in files if Path(f).exists()]
    if not found or overwrite or resume:
        return
    names = ", ".join(sorted({f.name for f in found}))
    options = "--resume to continue it, --overwrite" if resumable else "--overwrite"
    raise EarlierRunError(f"{target} holds an earlier run ({names}); allowed: {options} to "
                          f"replace it, or another output")


def staging_dir(out: str | Path) -> Path:
    """A new empty folder beside ``out`` (same file system) to build its files in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def publish(staged: str | Path, out: str | Path) -> None:
    """Move each entry of ``staged`` into ``out`` (each a rename, replacing one of the same
    name), then remove ``staged``: ``out`` gains a finished run, or nothing."""
    staged, out = Path(staged), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for entry in sorted(staged.iterdir()):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # os.replace cannot put a folder over a non-empty one
        os.replace(entry, target)
    staged.rmdir()
