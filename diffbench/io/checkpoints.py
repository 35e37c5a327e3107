"""Safetensors checkpoints (never pickle): saved atomically with a digest of their tensors,
their metadata's known fields type-checked whenever one is opened, models rebuilt from them.

A checkpoint is a safetensors file whose header carries the caller's metadata as JSON under the
key ``"diffbench"``; nested training state enters it through :mod:`diffbench.io.packed_state`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from diffbench.core.errors import InputError, MissingFileError
from diffbench.core.files import atomic_target, sha256_file
from diffbench.core.files import (
    check_writable_dir as check_writable_dir,  # importable from here too
)

METADATA_KEY = "diffbench"
DIGEST_KEY = "diffbench_sha256"  # sha256 of the tensors (names, dtypes, shapes, bytes) at save

_STRICT = ConfigDict(strict=True)


class _Stats(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    parameters: int = Field(ge=0)


class _Schedule(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str
    num_timesteps: int = Field(ge=1)


FACT_TYPES: dict[str, Any] = {
    "model_class": str, "model_config": dict[str, Any], "kind": str, "name": str,
    "prediction": str, "train_seconds": float, "cpu_seconds": float | None, "step": int,
    "final_loss": float, "images_per_second": float, "stats": _Stats, "schedule": _Schedule | None,
    "config": dict[str, Any], "environment": dict[str, Any], "command": str,
}
"""The type of each metadata field diffbench reads, checked whenever a checkpoint is opened."""
_FACT_CHECKS = {key: TypeAdapter(kind) if key in ("stats", "schedule") else
                TypeAdapter(kind, config=_STRICT) for key, kind in FACT_TYPES.items()}


def check_facts(path: str | os.PathLike, metadata: Any) -> dict[str, Any]:
    """``metadata`` if it is a JSON object whose known fields (:data:`FACT_TYPES`) have their
    types; else an InputError naming the file and the field."""
    expected = "allowed: a checkpoint's metadata as `diffbench train` writes it"
    if not isinstance(metadata, dict):
        raise InputError(f"{path} has malformed {METADATA_KEY!r} metadata: a JSON "
                         f"{type(metadata).__name__}, not an object; {expected}")
    for key, check in _FACT_CHECKS.items():
        if key not in metadata:
            continue
        try:
            check.validate_python(metadata[key])
        except ValidationError as err:
            problem = err.errors()[0]
            where = ".".join(map(str, (key, *problem["loc"])))
            got = " ".join(repr(problem.get("input"))[:80].split())
            raise InputError(f"{path}: metadata {where}: {problem['msg']} (got {got}); "
                             f"{expected}") from None
    return metadata


def checkpoint_sha256(directory: str | os.PathLike, names: list[str] | None = None) -> dict:
    """File name -> sha256 of ``names`` in ``directory`` (default: every inference checkpoint,
    ``*.safetensors`` but not ``*.state.safetensors``)."""
    directory = Path(directory)
    if names is None:
        names = sorted(p.name for p in directory.glob("*.safetensors")
                       if not p.name.endswith(".state.safetensors"))
    return {name: sha256_file(directory / name) for name in names}


def require_checkpoints(directory: str | os.PathLike, names: list[str]) -> Path:
    """Raise a FileNotFoundError naming ``directory`` unless it holds every file of ``names``."""
    directory = Path(directory)
    expected = (f"a folder holding {', '.join(names)} as `diffbench train` writes them "
                f"(the trained ones ship in fixtures/checkpoints)")
    if not directory.is_dir():
        raise MissingFileError(
            f"checkpoints folder {directory} does not exist; expected {expected}"
        )
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise MissingFileError(
            f"checkpoints folder {directory} lacks {', '.join(missing)}; expected {expected} "
            f"(only safetensors files are read)"
        )
    return directory


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _cpu_contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU tensors; one sharing storage with an earlier one is cloned."""
    out: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"checkpoint entry {key!r} is a {type(tensor).__name__}, not a Tensor")
        cpu = tensor.detach().to("cpu").contiguous()
        if cpu.untyped_storage().data_ptr() in storages:
            cpu = cpu.clone()
        storages.add(cpu.untyped_storage().data_ptr())
        out[key] = cpu
    return out


def save_checkpoint(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> Path:
    """Save ``tensors`` and JSON-serialisable ``metadata`` to a safetensors file, atomically,
    with a sha256 of the tensors that loading checks."""
    cpu_tensors = _cpu_contiguous(tensors)
    header = {METADATA_KEY: json.dumps(metadata), DIGEST_KEY: _tensor_digest(cpu_tensors)}
    with atomic_target(path) as tmp:
        save_file(cpu_tensors, tmp, metadata=header)
    return Path(path)


@contextlib.contextmanager
def _open_checkpoint(path: str | os.PathLike, device: str) -> Iterator[tuple[Any, dict]]:
    """Open a diffbench checkpoint: yield the safetensors handle and the decoded metadata.

    Only the safetensors format is parsed (a JSON header, then raw tensor bytes): a pickle, a
    truncated file or a mangled header is rejected here and never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no checkpoint file at {path}")
    expected = f"a safetensors file with {METADATA_KEY!r} JSON metadata (a diffbench checkpoint)"
    try:
        handle = safe_open(str(path), framework="pt", device=device)
    except (SafetensorError, OSError) as err:
        raise InputError(f"{path} is not {expected} (truncated, corrupt or another format): "
                         f"{err}") from err
    with handle:
        raw = (handle.metadata() or {}).get(METADATA_KEY)
        if raw is None:
            raise InputError(f"{path} has no {METADATA_KEY!r} metadata; expected {expected}")
        try:
            metadata = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as err:
            raise InputError(f"{path} has malformed {METADATA_KEY!r} metadata: {err}") from err
        yield handle, check_facts(path, metadata)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load all tensors (onto ``device``) and the metadata of a checkpoint; a checkpoint saved
    with a tensor digest must match it (else a ValueError names the file)."""
    with _open_checkpoint(path, "cpu") as (handle, metadata):
        names = handle.keys()  # a safe_open handle is not iterable
        try:
            tensors = {name: handle.get_tensor(name) for name in names}
        except SafetensorError as err:
            raise InputError(f"{path} is a corrupt safetensors file: {err}") from err
        recorded = (handle.metadata() or {}).get(DIGEST_KEY)
    if recorded is not None and _tensor_digest(tensors) != recorded:
        raise InputError(
            f"{path} is corrupt: its tensors do not match the sha256 recorded when it was saved; "
            f"restore the file or retrain it"
        )
    if torch.device(device).type != "cpu":
        tensors = {name: tensor.to(device) for name, tensor in tensors.items()}
    return tensors, metadata


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read only the metadata of a checkpoint (the header; no tensor is loaded)."""
    with _open_checkpoint(path, "cpu") as (_, metadata):
        return metadata


def model_metadata(model: Any) -> dict[str, Any]:
    """What `load_model` needs to rebuild ``model``: its class name and dataclass config."""
    return {"model_class": type(model).__name__, "model_config": dataclasses.asdict(model.cfg)}


def require_metadata(path: str | os.PathLike, metadata: dict[str, Any], *keys: str) -> None:
    """Raise a ValueError naming ``path`` unless its metadata has every key of ``keys``."""
    missing = [key for key in keys if key not in metadata]
    if missing:
        raise InputError(
            f"{path} lacks the metadata {', '.join(missing)}; allowed: a finished checkpoint "
            f"as `diffbench train` writes it"
        )


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, dict]:
    """Rebuild a diffbench model from a checkpoint whose metadata names its ``model_class`` and
    ``model_config`` (as ``diffbench train`` writes them); returned in eval mode, frozen."""
    from diffbench.models import MODEL_TYPES  # models sit below checkpoints; import on use

    tensors, metadata = load_checkpoint(path, device)
    if metadata.get("model_class") not in MODEL_TYPES:
        raise InputError(
            f"{path} holds no known model: model_class {metadata.get('model_class')!r}; "
            f"allowed: {sorted(MODEL_TYPES)}"
        )
    module_class, config_class = MODEL_TYPES[metadata["model_class"]]
    try:
        config = {
            k: tuple(v) if isinstance(v, list) else v for k, v in metadata["model_config"].items()
        }
        model = module_class(config_class(**config))
        model.load_state_dict(tensors)  # RuntimeError: names or shapes that do not fit
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        detail = " ".join(str(err).split())[:500]
        raise InputError(
            f"{path} does not match the {metadata['model_class']} config in its metadata "
            f"({type(err).__name__}: {detail}); allowed: weights whose names and shapes are "
            f"those of the recorded model_config"
        ) from err
    return model.to(device).eval().requires_grad_(False), metadata


