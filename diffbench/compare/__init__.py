"""``diffbench compare``: DDPM, DDIM and latent diffusion side by side on the same digits.

Systems are the config's (a registered or ``package.module:Name`` sampler, on the shipped
checkpoint or a ``package.module:factory`` model) and, from Python (:func:`run`), any
:class:`~diffbench.core.system.System` object. For every system and strength: fidelity on
``num_images`` test digits, each figure with its 95% interval, beside the noised accuracy in the
system's own space; and latency timed the same way for every system (``warmup`` untimed calls at
each strength, then ``repeats`` timed ones, inputs and generators on the device before the
clock starts, the device synchronised before it stops; median, p50/p90/p99, min, max) with the
peak memory of a call; both by :mod:`diffbench.measure.scoring`. These rows are the equal-strength
view (``"view": "equal_strength"``); with ``match_information`` set, each system also gets an
equal-information row (``"view": "equal_information"``) at the strength where its own space's
noised accuracy equals that value (:mod:`diffbench.measure.information`); with ``match_snr``, an
equal-SNR row (``"view": "equal_snr"``) per strength, at the strength whose start has the SNR of
the VP start ``t = int(strength * T) - 1`` (a flow network's input at sigma 0.3 has an SNR of
5.4; a VP input at t = 299 one of 0.66). Every row carries its start's ``start_snr`` and, for a
flow system, ``start_sigma``. Results reach disk (JSON,
Markdown, PNGs) before MLflow is tried. With ``compile`` set, compilation (or CUDA-graph
capture) happens in untimed calls and is reported apart, as ``compile_seconds``.

Everything that can be checked is checked before the work starts: the device, a writable
output folder, every checkpoint loading into its model, every strength giving a step. Each row
of results.json records what reproduces it: seed, device, torch version and the sha256 of every
checkpoint file the row used, and a Translator's settings (compile mode, noise device, TF32,
channels-last weights).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from tqdm.auto import tqdm

from diffbench.compare.merge import check_merge_target as check_merge_target  # lived here:
from diffbench.compare.merge import merge as merge  # still importable from here
from diffbench.compare.plan import (
    PlannedRow,
    PlannedSystem,
    plan_rows,
    planned_list,
    rows_of,
    system_costs,
)
from diffbench.compare.rows import RowRunner, run_system, table_columns
from diffbench.compare.rows import measure_row as measure_row  # lived here: still importable
from diffbench.compare.systems import (
    build_systems,
    check_counts,
    digit_counts,
    plan_systems,
    snr_timesteps,
)
from diffbench.core.environment import environment_facts
from diffbench.core.runtime import resolve_device
from diffbench.core.system import System
from diffbench.io.checkpoints import (
    check_writable_dir,
    checkpoint_sha256,
    require_checkpoints,
)
from diffbench.io.config import CompareConfig, SystemConfig, validate
from diffbench.measure.metrics import NOISY_CLASSIFIERS, Judge
from diffbench.measure.scoring import load_digits, noised_inputs
from diffbench.results import mlflow_runs
from diffbench.results.mlflow_runs import (
    forget_run,
    log_dataset,
    log_verdicts,
    row_runs,
    save_run,
    saved_run,
)
from diffbench.results.results_files import FRECHET_REFERENCE, GRID_INPUTS, write_reports
from diffbench.results.results_files import results_markdown as results_markdown  # they lived here:
from diffbench.results.results_files import (
    write_results as write_results,  # still importable from here
)
from diffbench.results.rowstore import RowStore
from diffbench.results.shards import Neighbours, assign, shard_dir
from diffbench.results.tracking import start_run

LOG = logging.getLogger(__name__)


def checkpoint_files(config: CompareConfig) -> list[str]:
    """The checkpoint files the comparison reads (the noise-aware classifiers when present)."""
    names = ["classifier.safetensors"]
    names += [f"{name}.safetensors" for name in NOISY_CLASSIFIERS.values()
              if (Path(config.checkpoints) / f"{name}.safetensors").is_file()]
    names += list(dict.fromkeys(f"{unet_stem(system)}.safetensors" for system in config.systems
                                if system.model is None))
    latent = any(system.space == "latent" for system in config.systems)
    return names + (["vae.safetensors"] if latent else [])


def unet_stem(system: SystemConfig) -> str:
    """The shipped UNet checkpoint a system runs: ``pixel``, ``latent``, ``pixel_flow``, ..."""
    return system.space if system.prediction == "eps" else f"{system.space}_{system.prediction}"


class _PythonRun(CompareConfig):
    """:func:`run`'s settings: systems may all come as System objects."""

    systems: list[SystemConfig] = Field(default_factory=list)


def run(systems: Sequence[System | dict[str, Any]], overwrite: bool = False,
        **settings: Any) -> list[dict[str, Any]]:
    """The comparison from Python: ``systems`` are System objects (a Translator, the peer,
    your own) or config mappings (``{"space": "pixel", "sampler": "mypkg.samplers:Euler"}``);
    ``settings`` are other compare config keys (``out``, ``strengths``, ``num_images``, ...);
    ``overwrite`` replaces an earlier run in ``out`` (else it is refused)."""
    mappings = [s for s in systems if isinstance(s, dict)]
    objects = [s for s in systems if not isinstance(s, dict)]
    config = validate(_PythonRun, {**settings, "systems": mappings})
    return run_compare(config, objects, overwrite=overwrite)


def run_compare(
    config: CompareConfig,
    systems: Sequence[System] = (),
    resume: bool = False,
    shard: tuple[int, int] | None = None,
    shared_machine: bool = False,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run the comparison of the config's systems, then ``systems`` (any System objects), and
    write results.json, results.md, i2i_comparison.png, pareto.png (and fidelity_vs_strength.png
    for several strengths) into ``config.out``; log to MLflow. The rows are planned first
    (:mod:`diffbench.compare.plan`), then taken in the plan's order: each reaches
    ``results.jsonl`` as it is measured (:mod:`diffbench.results.rowstore`); with ``resume`` the
    rows already there are kept and not rerun, with ``overwrite`` an earlier run there is replaced,
    and with neither a folder holding an earlier run is refused. With ``shard=(I, N)`` only
    shard I's systems run, into ``<out>/shard-I-of-N`` (:mod:`diffbench.results.shards`;
    ``shared_machine`` flags its rows' timings as taken beside other shards: set by the caller
    for torchrun, and for any row measured while another shard of the run was alive on this
    host)."""
    check_counts(config)
    device = resolve_device(config.device)
    check_writable_dir(config.out)
    out = run_folder(config, shard)
    RowStore.claim(out, resume, overwrite)  # before any work, not after it
    names = checkpoint_files(config)
    require_checkpoints(config.checkpoints, names)
    judge = Judge.from_checkpoints(config.checkpoints, device)
    systems = build_systems(config, systems, device)
    hashes = checkpoint_sha256(config.checkpoints, names)
    provenance = {"seed": config.seed, "device": str(device), "torch": torch.__version__}
    planned = plan_systems(config, systems, hashes, provenance)
    plan = plan_rows(planned, config.strengths, config.match_information, snr_timesteps(config))
    owned = owned_systems(plan, planned, shard)
    digits = load_digits(judge, max(*digit_counts(config, len(systems)), config.grid_images),
                         config.data_dir)
    run_facts = {"checkpoint_sha256": hashes, **({"shard": list(shard)} if shard else {}),
                 "planned": planned_list(rows_of(plan, owned), planned),
                 "environment": environment_facts()}  # once: a git call and the metadata
    store = RowStore.open(out, {**config.model_dump(), **run_facts}, resume, overwrite)
    done = store.done()  # a resume refuses rows it cannot key, before anything is written
    if not resume:
        forget_run(out)  # a new MLflow run, not the earlier run's continued
    if not owned:
        LOG.warning("shard %d/%d has no system to run: %d systems", *shard, len(systems))
        return []
    save_grid_inputs(store, digits.images[: config.grid_images], systems[owned[0]], config)
    frechet = digits.reference.frechet
    store.save_extra(FRECHET_REFERENCE, {"mean": frechet.mean, "cov": frechet.cov}, {})
    runner = partial(RowRunner, config, judge, digits, store, done)
    return take_rows(runner, config, systems, planned, rows_of(plan, owned), shard,
                     shared_machine, run_facts["environment"])


def take_rows(runner: Callable[..., RowRunner], config: CompareConfig, systems: Sequence[System],
              planned: Sequence[PlannedSystem], rows: Sequence[tuple[int, PlannedRow]],
              shard: tuple[int, int] | None, shared_machine: bool,
              facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Take the planned ``rows`` system by system inside the run's progress bar, MLflow run and
    (for a shard) its registration beside the run's other shards; then the reports."""
    digest, out = run_digest(config), run_folder(config, shard)
    registry = Neighbours(digest) if shard is not None else nullcontext()
    with (tqdm(total=len(rows), desc="rows", unit="row") as bar,
          start_run(config.experiment, run_name=parent_run_name(config, digest, shard),
                    params=config.model_dump(), tags=run_tags(digest, facts),
                    run_id=saved_run(out).get("run_id")) as run,  # a resume's: continued
          registry as neighbours):
        save_run(out, run, digest)
        taker = runner(bar, run, neighbours, shared_machine, logged=row_runs(run))
        log_dataset(run, "mnist-test", "test", config.data_dir, len(taker.digits.images),
                    "evaluation")
        for k in dict.fromkeys(row.system for _, row in rows):
            run_system(taker, systems[k], planned[k], [r for r in rows if r[1].system == k])
        bar.close()
        LOG.info("%d rows planned: %d on disk from before, %d measured", len(rows),
                 taker.resumed, taker.measured)
        results, files = write_reports(taker.store)
        log_verdicts(run, results, taker.logged)
        for path in files:
            run.log_artifact(path)
        run.log_table(table_columns(results), "results_table.json")
    return results


def run_folder(config: CompareConfig, shard: tuple[int, int] | None) -> Path:
    """Where the run's rows go: ``out``, or a shard's folder in it."""
    return shard_dir(config.out, shard) if shard is not None else Path(config.out)


def owned_systems(plan: Sequence[PlannedRow], systems: Sequence[PlannedSystem],
                  shard: tuple[int, int] | None) -> list[int]:
    """The systems this process runs: all, or shard I's, balanced on the plan's costs."""
    if shard is None:
        return [system.index for system in systems]
    owner = assign(system_costs(plan, systems), shard[1])
    return [system.index for system in systems if owner[system.index] == shard[0]]


def parent_run_name(config: CompareConfig, digest: str, shard: tuple[int, int] | None) -> str:
    """The comparison's MLflow run name: its output folder and config digest (and shard), e.g.
    ``compare results 1a2b3c4d`` (every parent run was once named "compare")."""
    return mlflow_runs.parent_run_name(config.out, digest,
                                       f"shard {shard[0]}/{shard[1]}" if shard else "")


def run_tags(digest: str, facts: dict[str, Any]) -> dict[str, str]:
    """Tags that find a comparison's runs: its config digest, the commit and the machine (from
    the run's :func:`~diffbench.core.environment.environment_facts`)."""
    return {"config_digest": digest, "git_commit": str(facts["git_commit"]),
            "git_dirty": str(facts["git_dirty"]), "cpu": str(facts["cpu"]),
            "cuda_device": str(facts["cuda_device"]), "torch": facts["torch"],
            "constraints": str(facts["constraints"])[:5000]}


def run_digest(config: CompareConfig) -> str:
    """The same short digest for every shard of one comparison: its config's."""
    text = json.dumps(config.model_dump(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_grid_inputs(store: RowStore, sources: torch.Tensor, system: System,
                     config: CompareConfig) -> None:
    """The grid's first two columns (the source digits, and their noised versions at
    ``system``'s start per strength), saved beside the rows so any run's grid can be redrawn."""
    tensors = {"sources": sources}
    titles = {}
    for strength in config.strengths:
        key = f"noised_{strength:g}"
        tensors[key] = noised_inputs(system, sources, strength, config.seed)
        titles[key] = f"noised t={system.plan(strength).start_timestep}"
    store.save_extra(GRID_INPUTS, tensors, titles)
