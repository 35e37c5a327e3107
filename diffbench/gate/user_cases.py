"""A repository's own ``diffbench ab`` cases: its systems (samplers and models by name, installed
or ``package.module:Name``) at the strengths and batches it names, gated base against head like
the built-in cases of :mod:`diffbench.gate.cases`.

The file (``diffbench_ab.yaml`` at the repository's root, or ``diffbench ab --cases-file``)::

    cases:
      - system: {space: pixel, sampler: "mypkg.samplers:MySampler", steps: 10}
        strengths: [0.3]       # default [0.3]
        batches: [1, 16]       # default [1]; batch 1 is certified by work counts alone
        quick: true            # default true: among the cases ``--cases quick`` runs

``system`` is a compare-config system (:class:`diffbench.io.config.SystemConfig`), so anything a
comparison runs can be gated. Each (system, strength, batch) is one case named as the built-in
ones, ``img2img-<label>-s<strength>-b<batch>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from diffbench.gate.cases import DIGITS, Case, img2img_name
from diffbench.io.config import SystemConfig
from diffbench.io.config_files import ConfigError, load_yaml, validate

CASES_FILE = "diffbench_ab.yaml"
"""The cases file ``diffbench ab`` reads at a repository's root when ``--cases-file`` is not
given and the repository is not diffbench's own."""


class UserCase(BaseModel):
    """One system of the file, at each of its strengths and batches."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    system: SystemConfig
    strengths: list[Annotated[float, Field(gt=0, le=1)]] = Field([0.3], min_length=1)
    batches: list[Annotated[int, Field(ge=1, le=DIGITS)]] = Field([1], min_length=1)
    quick: bool = True


class UserCases(BaseModel):
    """The whole file: at least one case."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cases: list[UserCase] = Field(min_length=1)


def cases_file_in(folder: Path, given: Path | None = None) -> Path | None:
    """``given``, else ``folder``'s ``diffbench_ab.yaml`` if it has one, else None."""
    if given is None and (folder / CASES_FILE).is_file():
        return folder / CASES_FILE
    return given


def load_user_cases(path: str | Path) -> dict[str, Case]:
    """The cases of the file at ``path`` by name; one error naming the file, the key and what
    is allowed when it cannot be used (two entries giving one name included)."""
    path = Path(path)
    try:
        found = validate(UserCases, load_yaml(path))
    except ConfigError as error:
        raise ConfigError(f"ab cases file {path}: {error}") from None
    cases: dict[str, Case] = {}
    for entry in found.cases:
        system = entry.system.model_dump(exclude_defaults=True)
        for strength in entry.strengths:
            for batch in entry.batches:
                name = img2img_name({"steps": "default", **system}, strength, batch)
                if name in cases:
                    raise ConfigError(f"ab cases file {path}: two cases are named {name!r}; "
                                      f"give the systems different 'name's")
                cases[name] = Case(name, "img2img",
                                   {"system": system, "strength": strength, "batch": batch},
                                   quick=entry.quick)
    return cases


def cases_json(cases: dict[str, Case]) -> str:
    """The cases as the JSON list a worker reads back (``--cases-json``): both versions' workers
    run the cases the head read from the file."""
    return json.dumps([{"name": c.name, "kind": c.kind, "params": c.params, "quick": c.quick}
                       for c in cases.values()])

