"""Nested training state (optimizer, scheduler, RNG states) as flat tensors plus a JSON
structure, for a safetensors checkpoint: `pack_state` splits, `unpack_state` rebuilds exactly,
dict key types included."""

from __future__ import annotations

from typing import Any

import torch

_TENSOR, _TUPLE, _DICT = "tensor", "tuple", "dict"
_SCALARS = (bool, int, float, str, type(None))


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
