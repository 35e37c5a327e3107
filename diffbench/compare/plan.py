"""A comparison's plan: the rows to measure, made once from its resolved systems, before any work.

:func:`plan_rows` is pure (no files, no tensors, no network): given each system as
:class:`PlannedSystem` (what resolving the config found: its name, digits, the strength of each
equal-SNR start and the network evaluations at each strength) and the comparison's views, it
lists every row in the order they are measured, each saying its system, view, strength (or the
SNR it matches) and which earlier row it reuses. Everything that counts or splits rows reads
this list: the progress total, the shards' costs (:func:`system_costs`, balanced by
:func:`diffbench.results.shards.assign`), ``--resume`` (each row's key, :func:`row_identity`) and
the run's closing count of rows found on disk and rows measured.

Views: ``equal_strength`` at each strength; ``equal_information`` once per system, at a strength
found by measuring its noised accuracy (so its strength is None in the plan); ``equal_snr`` at
each strength, at the strength whose start has the SNR of the VP start of that strength: a
system whose equal-SNR strength is one of the comparison's strengths reuses that row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

VIEWS = ("equal_strength", "equal_information", "equal_snr")
"""The views a row can be in, in the order a system's rows are measured."""


@dataclass(frozen=True)
class PlannedSystem:
    """A system as the plan sees it, resolved once (:mod:`diffbench.compare.systems`).

    ``facts``: the fields every row of the system carries beside what it measured (its
    config, settings, checkpoint hashes, seed, ...; the row's key reads them, see
    :func:`row_identity`). ``snr_strengths``: config
    strength -> the strength of the system's start with the SNR of that strength's VP start
    (empty without the equal-SNR view). ``nfe``: strength -> network evaluations of one call.
    """

    index: int
    name: str
    num_images: int
    facts: Mapping[str, Any]
    snr_strengths: Mapping[float, float] = field(default_factory=dict)
    nfe: Mapping[float, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedRow:
    """One row to measure: ``system`` (its index), ``view``, ``strength`` (None for an
    equal-information row: found by measuring), ``extra`` (the row fields the view adds) and
    ``reuses`` (the plan position of the row whose figures it copies, or None)."""

    system: int
    view: str
    strength: float | None
    extra: Mapping[str, Any] = field(default_factory=dict)
    reuses: int | None = None


def plan_rows(systems: Sequence[PlannedSystem], strengths: Sequence[float],
              match_information: float | None = None,
              snr_timesteps: Mapping[float, int] | None = None) -> tuple[PlannedRow, ...]:
    """Every row of the comparison, system by system: its equal-strength rows, its
    equal-information row (with ``match_information``), then its equal-SNR rows (with
    ``snr_timesteps``: strength -> the VP start timestep its equal-SNR row matches)."""
    rows: list[PlannedRow] = []
    for system in systems:
        own = {}  # strength -> plan position of this system's equal-strength row
        for strength in strengths:
            own[strength] = len(rows)
            rows.append(PlannedRow(system.index, "equal_strength", strength))
        if match_information is not None:
            rows.append(PlannedRow(system.index, "equal_information", None,
                                   {"match_information": match_information}))
        if snr_timesteps is None:
            continue
        for strength in strengths:
            at = system.snr_strengths[strength]
            extra = {"match_snr_of_strength": strength, "matched_timestep": snr_timesteps[strength]}
            rows.append(PlannedRow(system.index, "equal_snr", at, extra, own.get(at)))
    return tuple(rows)


def system_costs(plan: Sequence[PlannedRow], systems: Sequence[PlannedSystem]) -> list[float]:
    """Network evaluations times digits of each system's measured rows: what balances the
    shards. A reused row costs nothing; an equal-information row (its strength found by
    measuring) costs the mean of the system's equal-strength rows."""
    costs = [0.0] * len(systems)
    for row in plan:
        system = systems[row.system]
        if row.reuses is not None:
            continue
        if row.strength is None:
            known = [system.nfe[r.strength] for r in plan
                     if r.system == row.system and r.view == "equal_strength"]
            nfe = sum(known) / max(len(known), 1)
        else:
            nfe = system.nfe[row.strength]
        costs[row.system] += nfe * system.num_images
    return costs


def rows_of(plan: Sequence[PlannedRow], owned: Sequence[int]) -> list[tuple[int, PlannedRow]]:
    """(plan position, row) of the rows whose system is in ``owned``, in plan order."""
    kept = set(owned)
    return [(position, row) for position, row in enumerate(plan) if row.system in kept]


def planned_list(rows: Sequence[tuple[int, PlannedRow]],
                 systems: Sequence[PlannedSystem]) -> list[dict[str, Any]]:
    """The rows a run's reports expect (``run.json``'s ``planned``): each one's system name,
    view and strength (None for an equal-information row, whose strength is found by
    measuring)."""
    return [{"name": systems[row.system].name, "view": row.view, "strength": row.strength}
            for _, row in rows]


def row_identity(system: PlannedSystem, view: str, strength: float) -> dict[str, Any]:
    """The fields that key one row (:func:`diffbench.results.rowstore.row_key`): the system's facts
    (config, settings, checkpoint hashes, seed), its name and digits, the row's view and
    strength."""
    return {**system.facts, "name": system.name, "num_images": system.num_images, "view": view,
            "strength": strength}
