"""A griffe extension for the docs site's API reference (mkdocs.yml): the code's docstrings
cite objects with Sphinx roles (``:class:`~diffbench.core.system.System```), which
mkdocstrings would print as written; each becomes Markdown code, ``System`` (with ``~``, the
last name only, as Sphinx shows it); a paragraph's closing ``::`` before a literal block
becomes ``:``, as Sphinx prints it."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
LITERAL = re.compile(r"(?<=\S)::$", re.M)


def _code(match: re.Match[str]) -> str:
    target = re.sub(r"\s+", "", match.group(2))  # a target broken across lines
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite every loaded docstring's Sphinx roles and literal-block markers as Markdown."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = LITERAL.sub(":", ROLE.sub(_code, obj.docstring.value))
