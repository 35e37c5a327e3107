"""A user's own sampler or model: named in a config as ``"package.module:Name"`` (the syntax of
Python entry points), or installed by a package that declares it under the entry-point groups
``diffbench.samplers`` and ``diffbench.models`` (found as pytest and MLflow find their plug-ins).
Naming or installing one imports its module, i.e. runs its code, as any entry point does.

Imports nothing from diffbench, so every layer may use it.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from diffbench.core.errors import InputError

SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_spec(text: Any) -> bool:
    """Whether ``text`` has the ``package.module:Name`` shape."""
    return isinstance(text, str) and SPEC.match(text) is not None


def load_object(spec: str, needs: str) -> Any:
    """The object ``spec`` names; a ValueError naming ``spec`` and ``needs`` (what the protocol
    asks of it) when it is malformed or cannot be imported."""
    if not is_spec(spec):
        raise InputError(f"plug-in {spec!r} is not 'package.module:Name'; {needs}")
    module_name, _, attribute = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as error:  # the user's module may fail in any way while it runs
        raise InputError(
            f"plug-in {spec!r} cannot be imported ({type(error).__name__}: {error}); {needs}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise InputError(f"plug-in {spec!r}: {module_name} has no {attribute}; {needs}")
        obj = getattr(obj, part)
    return obj


SAMPLER_GROUP = "diffbench.samplers"
"""Entry-point group of installed samplers: ``name = "package.module:SamplerClass"``."""
MODEL_GROUP = "diffbench.models"
"""Entry-point group of installed models: ``name = "package.module:factory"``."""
AUTOLOAD_ENV = "DIFFBENCH_DISABLE_PLUGIN_AUTOLOAD"
"""Set (to anything but empty) to load no installed plug-in, as pytest's
``PYTEST_DISABLE_PLUGIN_AUTOLOAD``."""
FAILED: dict[str, dict[str, str]] = {}
"""Group -> entry-point name -> why it could not be loaded (kept for the errors that name it)."""


class PluginWarning(UserWarning):
    """An installed plug-in could not be loaded; diffbench goes on without it."""


def installed(group: str) -> dict[str, Any]:
    """The entry points of ``group`` that installed packages declare (not loaded), by name;
    none when ``$DIFFBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set."""
    import os
    from importlib.metadata import entry_points

    if os.environ.get(AUTOLOAD_ENV):
        return {}
    return {point.name: point for point in entry_points(group=group)}


def origin(point: Any) -> str:
    """Who declares an entry point: ``distribution version``."""
    dist = getattr(point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed package"


def load_installed(group: str, needs: str) -> dict[str, tuple[Any, str]]:
    """Each loadable entry point of ``group``: name -> (object, origin). One
    :class:`PluginWarning` per entry point that fails to import (naming it, its package and the
    error); the rest load."""
    import warnings

    loaded = {}
    for name, point in installed(group).items():
        try:
            loaded[name] = (point.load(), origin(point))
        except Exception as error:  # the plug-in's module may fail in any way
            why = f"{point.value} from {origin(point)} ({type(error).__name__}: {error})"
            FAILED.setdefault(group, {})[name] = why
            warnings.warn(f"installed plug-in {name!r} of {group} cannot be loaded: {why}; "
                          f"{needs}", PluginWarning, stacklevel=2)
    return loaded


def failed_text(group: str) -> str:
    """``; installed but not loaded: name (why), ...`` for an error message, or ''."""
    failed = FAILED.get(group, {})
    if not failed:
        return ""
    return "; installed but not loaded: " + ", ".join(f"{n} ({why})" for n, why in failed.items())


def model_factory(name: str, needs: str) -> Any:
    """The factory ``name`` names: ``package.module:factory``, or a model an installed package
    declares in the ``diffbench.models`` entry-point group; one error naming the choices
    otherwise."""
    if is_spec(name):
        return load_object(name, needs)
    points = installed(MODEL_GROUP)
    if name not in points:
        choices = ", ".join(points) or "none is installed"
        raise InputError(f"unknown model {name!r}; allowed: 'package.module:factory' or an "
                         f"installed model ({choices}); {needs}")
    try:
        return points[name].load()
    except Exception as error:  # the plug-in's module may fail in any way
        raise InputError(f"installed model {name!r} ({points[name].value} from "
                         f"{origin(points[name])}) cannot be loaded ({type(error).__name__}: "
                         f"{error}); {needs}") from None


def is_model_name(value: str) -> bool:
    """Whether a config's ``model`` names one: ``package.module:factory``, an installed model,
    or a folder saved by diffusers' ``UNet2DModel.save_pretrained`` (its ``config.json``)."""
    from pathlib import Path

    return (is_spec(value) or value in installed(MODEL_GROUP)
            or (Path(value) / "config.json").is_file())


def model_choices() -> str:
    """What a config's ``model`` may be, the installed models named."""
    names = ", ".join(installed(MODEL_GROUP)) or "none is installed"
    return (f"a model is 'package.module:factory', an installed model ({names}) or a folder "
            f"saved by UNet2DModel.save_pretrained")
