"""Files written atomically (readers see the old file or the new one), folders proven writable
before long work starts, and file digests. Imports no torch."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from diffbench.core.errors import InputError

MIN_FREE_BYTES = 64 * 2**20  # what an output folder must have free before a job starts


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; once the body has written it, fsync and replace ``path``.

    On any error the temp file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: readers see the old file or the new one."""
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def check_writable_dir(path: str | os.PathLike, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create the folder ``path`` if needed and prove that a file can be written and synced in
    it with ``min_free_bytes`` to spare; else raise a ValueError naming it. Run before long work.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".diffbench-probe-") as probe:
            probe.write(b"diffbench")
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(path).free
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(
            f"output folder {path} is not writable ({reason}); "
            f"allowed: a folder this user can create and write files in"
        ) from None
    if free < min_free_bytes:
        raise InputError(
            f"output folder {path} has {free / 2**20:.1f} MiB free; at least "
            f"{min_free_bytes / 2**20:.0f} MiB is needed: free space or choose another folder"
        )
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
