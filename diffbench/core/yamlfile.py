"""YAML as config text: plain data, each key once, no aliases, ``1e-6`` a number.

:func:`load` is ``yaml.safe_load`` less two traps: an alias (``*name``) is refused where it is
read, before anything is built, so a few hundred bytes cannot expand into gigabytes ("billion
laughs"); and a key given twice in one mapping is an error, not the last value silently kept.
Both raise ``yaml.YAMLError`` subclasses with the line and column, like any other YAML mistake.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError


class _ConfigLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases and repeated keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(None, None, f"alias *{event.anchor} is not allowed (write the "
                                f"value out)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if repeated:
                raise ConstructorError(None, None, f"key {key!r} is given twice",
                                       key_node.start_mark)
        return super().construct_mapping(node, deep)


# YAML 1.2's floats: `1e-6` is a number (YAML 1.1, PyYAML's default, reads it as a string).
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"""),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    """The plain data in ``text`` (see the module docstring for what is refused)."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
