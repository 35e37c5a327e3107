"""A comparison's rows on disk as they are measured: ``results.jsonl`` plus one small tensor
file per row, so a killed or interrupted run loses at most the row in flight.

Layout of an output folder:

* ``run.json``: the run's identity (its config less where it writes and how it reports) and
  environment, written first; a resume of another identity is refused, naming the first difference;
* ``rows/<n>.safetensors``: row n's grid images and per-digit scores (for the paired intervals),
  written atomically *before* its line;
* ``results.jsonl``: one JSON row per line, each flushed and fsynced before the next row starts;
  a half-written last line (a kill during the write) is dropped with a warning naming it.

A row is identified by :func:`row_key` (its system's name and config, every setting that changes
its outputs, view, strength, seed, digits, checkpoint hashes), so ``--resume`` skips exactly the
rows already measured; rows of schema version 3 and earlier are refused by a resume.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.core.outputs import refuse_earlier_run
from diffbench.results.row import SETTINGS, make_row

RUN_FILE, ROWS_FILE, TENSORS_DIR, REPORT_FILE = "run.json", "results.jsonl", "rows", "results.json"
IDENTITY = ("name", "view", "strength", "seed", "num_images")  # the fields every stored row has
KEY = ("name", "system_config", "view", "strength", "seed", "num_images", *SETTINGS,
       "other_settings", "checkpoint_sha256")
"""What :func:`row_key` reads: everything that changes a row's outputs."""
NOT_IDENTITY = ("out", "experiment", "grid_images", "device", "environment")
"""Config keys that change where or how a comparison reports, or where it ran; not its rows."""


class TruncatedRowWarning(UserWarning):
    """The last line of results.jsonl was half-written (a kill during the write): dropped."""


class ResumeError(InputError):
    """A resume against a comparison that is not the one in the folder."""


def row_key(row: dict[str, Any]) -> str:
    """What identifies a row across runs: its :data:`KEY` fields (a missing one is None; a
    strength as a float, 1 and 1.0 alike)."""
    fields = {name: row.get(name) for name in KEY}
    fields["strength"] = float(fields["strength"])
    return json.dumps(list(fields.values()), sort_keys=True, default=str)


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config dump that decides its rows."""
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}


def first_difference(old: Any, new: Any, path: str = "") -> str | None:
    """``key: old -> new`` for the first difference of two JSON values, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            found = first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if old == new else f"{path or 'config'}: {json.dumps(old)} -> {json.dumps(new)}"


class RowStore:
    """The rows of one output folder: :meth:`open` it for a new or resumed run, :meth:`append`
    each row, :meth:`rows` and :meth:`tensors` to rebuild the reports."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self._rows: list[dict[str, Any]] = []

    @staticmethod
    def claim(out: str | Path, resume: bool = False, overwrite: bool = False,
              resumable: bool = True) -> None:
        """Refuse ``out`` when it holds an earlier run, unless ``resume`` or ``overwrite``
        (``resumable``: the job offers --resume)."""
        out = Path(out)
        refuse_earlier_run(out, [out / name for name in (RUN_FILE, ROWS_FILE, TENSORS_DIR,
                                                         REPORT_FILE)],
                           overwrite=overwrite, resume=resume, resumable=resumable)

    @classmethod
    def open(cls, out: str | Path, config: dict[str, Any], resume: bool,
             overwrite: bool = False) -> RowStore:
        """A store for a run of ``config`` in ``out``: a fresh one (an earlier run's rows
        cleared only with ``overwrite``), or with ``resume`` the rows already there, after
        checking the folder holds this run."""
        cls.claim(out, resume, overwrite)
        store = cls(out)
        store.out.mkdir(parents=True, exist_ok=True)
        run_path = store.out / RUN_FILE
        wanted = json.loads(json.dumps(identity(config), default=str))
        if resume and run_path.is_file():
            found = identity(json.loads(run_path.read_text()))
            difference = first_difference(found, wanted)
            if difference:
                raise ResumeError(f"cannot resume {store.out}: its run differs in {difference}; "
                                  f"rerun without --resume, or with the same config")
            store._rows = store.load_rows()
            store._cut_half_written_line()
            return store
        for stale in (*store.out.glob(ROWS_FILE), *store.out.glob(f"{TENSORS_DIR}/*.safetensors")):
            stale.unlink()
        tmp, recorded = run_path.with_suffix(".tmp"), {"environment": config.get("environment")}
        tmp.write_text(json.dumps({**wanted, **recorded}, indent=2, default=str) + "\n")
        os.replace(tmp, run_path)
        return store

    @classmethod
    def read(cls, out: str | Path) -> RowStore:
        """The rows of a finished, partial or killed run, for ``diffbench report``."""
        store = cls(out)
        if not (store.out / RUN_FILE).is_file():
            raise InputError(f"{store.out} holds no {RUN_FILE}; allowed: the output folder of "
                             f"a `diffbench compare` run")
        store.run()  # a readable run.json, or an error naming it
        store._rows = store.load_rows()
        return store

    def load_rows(self) -> list[dict[str, Any]]:
        path = self.out / ROWS_FILE
        if not path.is_file():
            return []
        lines = path.read_text().split("\n")
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                if number < len(lines):  # a complete line (a newline follows it) is corrupt
                    raise InputError(f"{path}, line {number}: not a JSON row") from None
                warnings.warn(f"{path}, line {number}: half-written last row dropped "
                              f"(the run was killed while writing it)", TruncatedRowWarning,
                              stacklevel=2)
                continue
            rows.append(check_row(row, f"{path}, line {number}"))
        return rows

    def _cut_half_written_line(self) -> None:
        """Cut a half-written last line (a kill during the write) off the file, once, when a
        run resumes, so appended rows start on a line of their own."""
        path = self.out / ROWS_FILE
        if not path.is_file() or not path.stat().st_size:
            return
        with path.open("rb") as file:
            file.seek(-1, os.SEEK_END)
            if file.read(1) == b"\n":
                return
        text = path.read_bytes()
        path.write_bytes(text[: text.rfind(b"\n") + 1])

    def row(self, index: int) -> dict[str, Any]:
        """A copy of row ``index``."""
        return dict(self._rows[index])

    def rows(self) -> list[dict[str, Any]]:
        """Copies of the rows, in the order they were measured."""
        return [dict(row) for row in self._rows]

    def run(self) -> dict[str, Any]:
        """The run's identity (``run.json``): its config less where and how it reports."""
        path = self.out / RUN_FILE
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            run = None
        if not isinstance(run, dict):
            raise InputError(f"{path} is not a run's identity (a JSON object); allowed: the "
                             f"run.json `diffbench compare` writes")
        return run

    def strengths(self) -> list[float]:
        """The run's strengths (from ``run.json``), checked to be a list of numbers."""
        strengths = self.run().get("strengths")
        if not (isinstance(strengths, list) and all(
                isinstance(s, int | float) and not isinstance(s, bool) for s in strengths)):
            raise InputError(f"{self.out / RUN_FILE} has no list of strengths (got "
                             f"{' '.join(repr(strengths)[:80].split())}); allowed: the run.json "
                             f"`diffbench compare` writes")
        return strengths

    def save_extra(self, name: str, tensors: dict[str, Tensor], titles: dict[str, str]) -> None:
        """Tensors of the run that belong to no row (the grid's inputs), with string facts."""
        _save_tensors(self.out / TENSORS_DIR / f"{name}.safetensors", tensors, titles)

    def load_extra(self, name: str) -> tuple[dict[str, Tensor], dict[str, str]]:
        path = self.out / TENSORS_DIR / f"{name}.safetensors"
        if not path.is_file():
            return {}, {}
        return _load_tensors(path, lambda file: file.metadata() or {})

    def done(self) -> dict[str, int]:
        """Row key -> its index, for the rows on disk; a row keyed without its system's config
        (written before schema version 4) is a ResumeError, not a guess."""
        for number, row in enumerate(self._rows, 1):
            if "system_config" not in row:
                raise ResumeError(
                    f"cannot resume {self.out}: {ROWS_FILE}, line {number} ({row['name']}) is "
                    f"of row schema version {row.get('schema_version', 1)}, whose rows do not "
                    f"record their system's config (eta, shift, spacing, model), so its rows "
                    f"cannot be told apart; rerun with --overwrite or into another --out")
        return {row_key(row): i for i, row in enumerate(self._rows)}

    def tensors(self, index: int) -> dict[str, Tensor]:
        """Row ``index``'s saved tensors (``outputs``: its grid images; per-digit scores)."""
        tensors, _ = _load_tensors(self.out / TENSORS_DIR / f"{index}.safetensors")
        return tensors

    def append(self, row: dict[str, Any], tensors: dict[str, Tensor]) -> int:
        """Write ``tensors`` (atomically), then ``row`` as one JSONL line, flushed and fsynced
        before returning its index."""
        index = len(self._rows)
        _save_tensors(self.out / TENSORS_DIR / f"{index}.safetensors", tensors)
        path = self.out / ROWS_FILE
        with path.open("a") as file:
            file.write(json.dumps(row, default=_jsonable) + "\n")
            file.flush()
            os.fsync(file.fileno())
        self._rows.append(row)
        return index


def check_row(row: Any, where: str) -> dict[str, Any]:
    """``row`` if it is a results row with its identity fields; else an InputError naming
    ``where``."""
    allowed = "allowed: rows as `diffbench compare` writes them"
    if not isinstance(row, dict):
        raise InputError(f"{where}: a JSON {type(row).__name__}, not a row; {allowed}")
    missing = [key for key in IDENTITY if row.get(key) is None]
    if missing:
        raise InputError(f"{where}: a row without {', '.join(missing)}; {allowed}")
    try:
        make_row(**row)
    except ValidationError as error:
        problem = error.errors()[0]
        key = ".".join(map(str, problem["loc"]))
        got = " ".join(repr(problem.get("input"))[:80].split())
        raise InputError(f"{where}: {key}: {problem['msg']} (got {got}); {allowed}") from None
    return row


def _save_tensors(path: Path, tensors: dict[str, Tensor], metadata: Any = None) -> None:
    """Write a tensor file atomically (through ``<name>.tmp``), its folder made if missing."""
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata=metadata)
    os.replace(tmp, path)


def _load_tensors(path: Path, read=None) -> tuple[dict[str, Tensor], Any]:
    """A row store's tensor file, and ``read(handle)`` of it; a missing, truncated or corrupt
    file is an InputError naming it."""
    try:
        with safe_open(str(path), "pt") as file:
            extra = read(file) if read else None
        return load_file(path), extra
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path} cannot be read ({' '.join(str(error).split())}); allowed: "
                         f"the complete tensor file `diffbench compare` wrote (rerun the "
                         f"comparison, or restore the file)") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def per_digit_tensors(scores: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-digit scores as tensors a safetensors file holds (bools as uint8)."""
    return {f"digit_{k}": (v.to(torch.uint8) if v.dtype == torch.bool else v)
            for k, v in scores.items()}


def per_digit_scores(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`per_digit_tensors`."""
    return {k.removeprefix("digit_"): (v.bool() if k == "digit_correct" else v)
            for k, v in tensors.items() if k.startswith("digit_")}
