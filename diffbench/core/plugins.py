"""A user's own sampler or model, named in a config as ``"package.module:Name"`` (the syntax of
Python entry points). Naming one imports its module, i.e. runs its code, as any entry point does.

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
