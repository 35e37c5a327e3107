"""Safetensors checkpoints (never pickle), atomic file writes and environment facts.

A checkpoint is a safetensors file whose header carries the caller's metadata as JSON under the
key ``"diffbench"``. Optimizer, scheduler and RNG states are nested Python structures: `pack_state`
splits one into a flat tensor dict plus a JSON-serialisable structure (kept in the metadata) and
`unpack_state` rebuilds it exactly, dict key types included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from diffbench.errors import InputError, MissingFileError

METADATA_KEY = "diffbench"
DIGEST_KEY = "diffbench_sha256"  # sha256 of the tensors (names, dtypes, shapes, bytes) at save
MIN_FREE_BYTES = 64 * 2**20  # what an output folder must have free before a job starts

_TENSOR, _TUPLE, _DICT = "tensor", "tuple", "dict"
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
_SCALARS = (bool, int, float, str, type(None))


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike) -> Iterator[Path]:
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
    with _atomic_target(path) as tmp:
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
    with _atomic_target(path) as tmp:
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


def _child(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def _pack_key(key: Any, path: str) -> Any:
    """Encode a dict key: a scalar, or a tuple of keys."""
    if isinstance(key, _SCALARS):
        return key
    if isinstance(key, tuple):
        return {_TUPLE: [_pack_key(k, path) for k in key]}
    raise TypeError(f"cannot pack a {type(key).__name__} dict key at {path or 'root'!r}")


def _pack(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        base = path or "root"
        key, n = base, 1
        while key in tensors:
            key, n = f"{base}#{n}", n + 1
        tensors[key] = obj
        return {_TENSOR: key}
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, list):
        return [_pack(v, _child(path, i), tensors) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {_TUPLE: [_pack(v, _child(path, i), tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, dict):
        return {
            _DICT: [
                [_pack_key(k, path), _pack(v, _child(path, k), tensors)] for k, v in obj.items()
            ]
        }
    raise TypeError(f"cannot pack a {type(obj).__name__} at {path or 'root'!r}")


def pack_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tuples, tensors, scalars) into tensors + JSON structure.

    Tensor keys follow the nesting (``"state/0/exp_avg"``); dict keys keep their type (int keys of
    an optimizer state dict come back as ints) because every dict is stored as a list of pairs.
    """
    tensors: dict[str, torch.Tensor] = {}
    return tensors, _pack(obj, "", tensors)


def unpack_state(tensors: dict[str, torch.Tensor], structure: Any) -> Any:
    """Rebuild the object that `pack_state` split into ``tensors`` and ``structure``."""
    if isinstance(structure, list):
        return [unpack_state(tensors, v) for v in structure]
    if not isinstance(structure, dict):
        return structure
    ((tag, value),) = structure.items()
    if tag == _TENSOR:
        return tensors[value]
    if tag == _TUPLE:
        return tuple(unpack_state(tensors, v) for v in value)
    return {unpack_state(tensors, k): unpack_state(tensors, v) for k, v in value}


def _safely(fact: Callable[[], Any]) -> Any:
    """``fact()``, or None if it raises."""
    try:
        return fact()
    except Exception:  # noqa: BLE001 - environment facts are best effort and must never raise
        return None


def _cpu_model() -> str | None:
    """The CPU model name from /proc/cpuinfo, else what `platform` knows (no hostname)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or None


def _git(*args: str) -> str | None:
    done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def environment_facts() -> dict[str, Any]:
    """Versions, CPU/GPU names and the git commit of the working directory; never raises."""
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _safely(_cpu_model),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": _safely(lambda: torch.cuda.get_device_name(0)) if cuda else None,
        "git_commit": _safely(lambda: _git("rev-parse", "HEAD")),
        "git_dirty": bool(_safely(lambda: _git("status", "--porcelain"))),
    }
