"""Configs read and validated: YAML files, ``--set key=value`` overrides, and pydantic's errors
turned into one :class:`ConfigError` line that names the key, the value and what is allowed."""

from __future__ import annotations

import reprlib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from diffbench.core import yamlfile
from diffbench.core.errors import InputError

_YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError)


class ConfigError(InputError):
    """A config file or override that cannot be used."""


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` (value parsed as YAML) to the nested mapping ``raw``."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    try:
        value = yamlfile.load(text)
    except _YAML_ERRORS as error:
        raise ConfigError(
            f"--set {assignment!r}: value is not valid YAML ({_yaml_problem(error)})"
        ) from None
    *parents, leaf = key.strip().split(".")
    node: Any = raw
    for part in parents:
        if isinstance(node, dict):
            if node.get(part) is None:  # absent, or an empty YAML entry (`model:`)
                node[part] = {}
            node = node[part]
        else:
            node = node[_list_index(node, part, assignment)]
        if not isinstance(node, dict | list):
            raise ConfigError(f"--set {assignment!r}: {part!r} holds neither a mapping nor a list")
    if isinstance(node, list):
        node[_list_index(node, leaf, assignment)] = value
    else:
        node[leaf] = value


def _list_index(items: list, part: str, assignment: str) -> int:
    if not (part.isascii() and part.isdigit()) or int(part) >= len(items):
        raise ConfigError(
            f"--set {assignment!r}: {part!r} is not an index of the {len(items)} items of the list"
        )
    return int(part)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (safe loader: plain data only, never Python objects)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; allowed: a YAML file of config keys")
    try:
        raw = yamlfile.load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read as UTF-8 text: {error}") from None
    except _YAML_ERRORS as error:
        raise ConfigError(
            f"config file {path} is not valid YAML ({_yaml_problem(error)}); "
            f"allowed: a YAML mapping of config keys"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of config keys, got {type(raw).__name__}"
        )
    return raw


def _yaml_problem(error: Exception) -> str:
    """One line: what the YAML parser found wrong, and where."""
    problem = getattr(error, "problem", None) or str(error)
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 100, 100


def short_repr(value: Any, limit: int = 120) -> str:
    """A repr of ``value`` cut to ``limit`` characters, built without expanding all of it."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_tuples(value: Any) -> Any:
    """``value`` with its YAML lists as tuples (what a model config's sequence fields are)."""
    return tuple(map(as_tuples, value)) if isinstance(value, list) else value


def type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint)


def validate(model: type[BaseModel], raw: dict[str, Any]) -> Any:
    """``model.model_validate(raw)``, with pydantic's errors turned into one ConfigError."""
    try:
        config = model.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe(model, e) for e in error.errors())
        raise ConfigError(f"invalid config: {problems}") from None
    if hasattr(config, "build_model_config"):
        config.build_model_config()  # unknown model keys fail now, not mid-run
    return config


def _describe(model: type[BaseModel], error: dict[str, Any]) -> str:
    """One pydantic error as ``key: problem (got value)``, plus the allowed keys for an unknown
    key."""
    loc = error["loc"]
    key = ".".join(map(str, loc)) or "<root>"
    text = f"{key}: {error['msg']} (got {short_repr(error.get('input'))})"
    if error.get("ctx", {}).get("hint"):
        text += f" {error['ctx']['hint']}"
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        if allowed:
            text += f"; allowed keys: {', '.join(allowed)}"
    return text


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names of the config model at ``loc`` (a pydantic error location) in ``model``."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return None
        model = inner
    return sorted(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model class inside a field's annotation (``list[SystemConfig]`` too)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
