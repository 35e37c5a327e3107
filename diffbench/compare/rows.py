"""The rows of one comparison taken in the plan's order (:mod:`diffbench.compare.plan`): each
from disk when a resume finds it there (by its key, :func:`diffbench.results.rowstore.row_key`),
else measured (fidelity and latency, :mod:`diffbench.measure.scoring`), checked against the row
model, stored as it finishes and logged to MLflow as a nested run
(:func:`diffbench.results.mlflow_runs.log_row`; a resume logs the rows on disk that MLflow
lacks); an equal-SNR row the plan says reuses an equal-strength row copies it; the first row of
a system that fails stops it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from diffbench.compare.plan import PlannedRow, PlannedSystem, row_identity
from diffbench.core.system import System, compile_seconds
from diffbench.io.config import CompareConfig
from diffbench.measure.information import match_information
from diffbench.measure.metrics import Judge
from diffbench.measure.scoring import (
    Digits,
    NonFiniteOutput,
    measure_latency,
    score_system,
    what_ran,
)
from diffbench.results.mlflow_runs import log_row
from diffbench.results.row import FIELDS, make_row
from diffbench.results.rowstore import RowStore, per_digit_tensors, row_key
from diffbench.results.shards import Neighbours

LOG = logging.getLogger(__name__)


@dataclass
class RowRunner:
    """Takes the rows of one run, each from disk when a resume finds it there, else measured,
    stored and logged; counts which."""

    config: CompareConfig
    judge: Judge
    digits: Digits
    store: RowStore
    done: dict[str, int]  # row key -> store index of the rows on disk (RowStore.done)
    bar: Any
    tracking: Any
    neighbours: Neighbours | None
    shared_machine: bool
    logged: dict[str, str] = field(default_factory=dict)  # rows in MLflow: tag -> run id
    resumed: int = 0
    measured: int = 0

    def take(self, identity: dict[str, Any],
             measure: Callable[[], tuple[dict[str, Any], dict[str, Any]]]) -> int:
        """The store index of the row ``identity`` keys (see
        :func:`diffbench.compare.plan.row_identity`): on disk, or measured now."""
        self.bar.set_postfix_str(f"{identity['name']} {identity['view']} "
                                 f"s{identity['strength']:g}")
        self.bar.update()
        key = row_key(identity)
        if key in self.done:
            self.resumed += 1
            log_row(self.tracking, self.store.row(self.done[key]), self.logged)  # if not yet
            return self.done[key]
        busy = self.neighbours is not None and self.neighbours.busy()
        row, tensors = measure()
        busy = busy or (self.neighbours is not None and self.neighbours.busy())
        # another shard ran on this host while the row was timed (or, for a reused row, while
        # the row it copies was): its latency is not comparable
        shared = bool(row.get("shared_machine")) or self.shared_machine or busy
        row = make_row(**{**row, "shared_machine": shared})
        index = self.store.append(row, tensors)
        log_row(self.tracking, row, self.logged)
        announce_row(row)
        self.measured += 1
        return index

    def failed(self, index: int) -> bool:
        return bool(self.store.row(index).get("failure"))


def run_system(runner: RowRunner, system: System, planned: PlannedSystem,
               rows: Sequence[tuple[int, PlannedRow]]) -> None:
    """One system's planned rows, in order; the first row that fails stops the system."""
    stored: dict[int, int] = {}  # plan position -> store index
    for position, row in rows:
        strength, extra = row.strength, {**row.extra}
        if row.view == "equal_information":
            extra = matched_strength(runner, system, planned)
            if extra is None:
                continue
            strength = extra["strength"]
        if row.reuses is not None:  # the system's own row at this strength, not rerun
            measure = partial(reused_row, runner.store, stored[row.reuses], extra)
        else:
            measure = partial(measured_row, runner, system, planned, strength, row.view, extra)
        stored[position] = runner.take(row_identity(planned, row.view, strength), measure)
        if runner.failed(stored[position]):
            return


def matched_strength(runner: RowRunner, system: System,
                     planned: PlannedSystem) -> dict[str, Any] | None:
    """An equal-information row's strength and match (:mod:`diffbench.measure.information`)."""
    target, digits = runner.config.match_information, runner.digits.first(planned.num_images)
    matched = match_information(system, runner.judge, digits, target, runner.config.seed)
    if matched is None:
        LOG.warning("%14s: its noised accuracy never equals %g on the start-timestep grid; "
                    "no equal-information row", system.name, target)
    return matched


def reused_row(store: RowStore, index: int, extra: dict[str, Any]) -> tuple[dict, dict]:
    """Row ``index``'s figures and tensors as an equal-SNR row (``extra``: its match)."""
    return {**store.row(index), "view": "equal_snr", **extra}, store.tensors(index)


def measured_row(runner: RowRunner, system: System, planned: PlannedSystem, strength: float,
                 view: str, extra: dict[str, Any]) -> tuple[dict, dict]:
    """The row measured now, with its tensors; a non-finite output is a failure row (no
    tensors) and stops the system."""
    config, count = runner.config, planned.num_images
    try:
        row, outputs, scores = measure_row(system, runner.judge, runner.digits, strength, config,
                                           count, view)
    except NonFiniteOutput as failure:
        LOG.warning("%14s: stopped: %s", system.name, failure)
        return ({"view": view, **what_ran(system, strength, count), **failure.fields(),
                 **extra, **planned.facts}, {})
    return ({**row, **extra, **planned.facts},
            {"outputs": outputs[: config.grid_images], **per_digit_tensors(scores)})


def measure_row(
    system: System,
    judge: Judge,
    digits: Digits,
    strength: float,
    config: CompareConfig,
    num_images: int,
    view: str = "equal_strength",
) -> tuple[dict[str, Any], torch.Tensor, dict[str, torch.Tensor]]:
    """One results row (fidelity on the first ``num_images`` digits, latency on the first
    ``timing_batch``, memory, training and compile seconds), the outputs scored, and their
    per-digit values."""
    compiled_before = compile_seconds(system)
    scored = digits.first(num_images)
    scores, outputs, per_digit = score_system(system, judge, scored, strength, config.seed)
    latency = measure_latency(system, digits.images[: config.timing_batch], strength,
                              config.seed, config.repeats, config.warmup)
    row = {"view": view, **scores, **latency,  # checked against the row model when stored
           "train_seconds": system.facts["train_seconds"],
           "train_cpu_seconds": system.facts.get("train_cpu_seconds"),
           "flops_per_image": system.flops_per_image(strength),
           "compile_seconds": compile_seconds(system) - compiled_before}
    return row, outputs, per_digit


def announce_row(row: dict[str, Any]) -> None:
    """The row's line, INFO on the `diffbench` logger (the CLI prints it above the bar)."""
    if row.get("failure"):
        return  # said when it happened
    lo, hi = row["preservation_ci95"]
    LOG.info("%14s strength %.3g (t=%s): %.4f s/image, mse %.4f, preservation %.3f "
             "[%.3f, %.3f] (noised accuracy %.3f)", row["name"], row["strength"],
             row["start_timestep"], row["sec_per_image"], row["mse"], row["preservation"], lo,
             hi, row["noised_accuracy"])


def table_columns(results: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The results as columns of scalars, for ``mlflow.log_table``."""
    keys = [k for k in FIELDS if any(k in r for r in results)]
    return {k: [r.get(k) if not isinstance(r.get(k), list | dict) else json.dumps(r.get(k))
                for r in results] for k in keys}
