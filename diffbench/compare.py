"""``diffbench compare``: DDPM, DDIM and latent diffusion side by side on the same digits.

Systems are the config's (a registered or ``package.module:Name`` sampler, on the shipped
checkpoint or a ``package.module:factory`` model) and, from Python (:func:`run`), any
:class:`~diffbench.system.System` object. For every system and strength: fidelity on
``num_images`` test digits, each figure with its 95% interval, beside the noised accuracy in the
system's own space; and latency timed the same way for every system (``warmup`` untimed calls at
each strength, then ``repeats`` timed ones, inputs and generators on the device before the
clock starts, the device synchronised before it stops; median, p50/p90/p99, min, max) with the
peak memory of a call; both by :mod:`diffbench.scoring`. These rows are the equal-strength view
(``"view": "equal_strength"``); with ``match_information`` set, each system also gets an
equal-information row (``"view": "equal_information"``) at the strength where its own space's
noised accuracy equals that value (:mod:`diffbench.information`); with ``match_snr``, an
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
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from tqdm.auto import tqdm

from diffbench.checkpoints import (
    check_writable_dir,
    checkpoint_sha256,
    require_checkpoints,
)
from diffbench.config import CompareConfig, SystemConfig, validate
from diffbench.errors import InputError
from diffbench.information import match_information, strength_for_timestep
from diffbench.metrics import NOISY_CLASSIFIERS, Judge
from diffbench.outputs import publish, staging_dir
from diffbench.results_files import (
    FRECHET_REFERENCE,
    GRID_INPUTS,
    write_reports,
)
from diffbench.results_files import results_markdown as results_markdown  # they lived here:
from diffbench.results_files import write_results as write_results  # still importable from here
from diffbench.row import FIELDS, METRICS, PARAMS, make_row, settings_fields
from diffbench.rowstore import (
    RowStore,
    first_difference,
    per_digit_tensors,
    row_key,
)
from diffbench.runtime import resolve_device
from diffbench.sampling import exact_start
from diffbench.scoring import (
    Digits,
    NonFiniteOutput,
    load_digits,
    measure_latency,
    noised_inputs,
    score_system,
    what_ran,
)
from diffbench.shards import Neighbours, assign, shard_dir
from diffbench.system import System, check_system, compile_seconds
from diffbench.tracking import start_run
from diffbench.translate import Translator


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
    for several strengths) into ``config.out``; log to MLflow. Every row reaches
    ``results.jsonl`` as it is measured (:mod:`diffbench.rowstore`); with ``resume`` the rows
    already there are kept and not rerun, with ``overwrite`` an earlier run there is replaced,
    and with neither a folder holding an earlier run is refused. With ``shard=(I, N)`` only
    shard I's systems run, into ``<out>/shard-I-of-N`` (:mod:`diffbench.shards`;
    ``shared_machine`` flags its rows' timings as taken beside other shards: set by the caller
    for torchrun, and for any row measured while another shard of the run was alive on this
    host)."""
    for k, system in enumerate(config.systems):
        if system.num_images is not None and system.num_images < config.grid_images:
            raise InputError(f"systems[{k}].num_images {system.num_images} is below grid_images "
                             f"{config.grid_images}: a system scores at least the grid's digits")
    device = resolve_device(config.device)
    check_writable_dir(config.out)
    out = shard_dir(config.out, shard) if shard is not None else Path(config.out)
    RowStore.claim(out, resume, overwrite)  # before any work, not after it
    names = checkpoint_files(config)
    require_checkpoints(config.checkpoints, names)
    judge = Judge.from_checkpoints(config.checkpoints, device)
    options = {"compile": config.compile, "noise_device": config.noise_device, "tf32": config.tf32}
    built = [Translator.from_config(s, config.checkpoints, device, **options)
             for s in config.systems]
    systems = built + [*systems]
    if not systems:
        raise InputError("nothing to compare: give at least one system")
    for system in systems:
        check_system(system)
        for strength in config.strengths:
            system.plan(strength)  # a ValueError now, not mid-run
    all_hashes = checkpoint_sha256(config.checkpoints, names)
    judge_hashes = {name: all_hashes[name] for name in names if "classifier" in name}
    provenance = {"seed": config.seed, "device": str(device), "torch": torch.__version__}
    # A system's own count, at most the comparison's (so --num-images 8 is a quick run).
    counts = [min(s.num_images or config.num_images, config.num_images) for s in config.systems]
    counts += [config.num_images] * (len(systems) - len(counts))  # System objects: the default
    digits = load_digits(judge, max(*counts, config.grid_images), config.data_dir)
    indexed = list(enumerate(systems))
    run_facts = {"checkpoint_sha256": all_hashes}
    if shard is not None:
        owner = assign([expected_cost(s, config, n) for s, n in zip(systems, counts)], shard[1])
        indexed = [(k, s) for k, s in indexed if owner[k] == shard[0]]
        run_facts["shard"] = list(shard)
    store = RowStore.open(out, {**config.model_dump(), **run_facts}, resume, overwrite)
    if not indexed:
        print(f"shard {shard[0]}/{shard[1]} has no system to run: {len(systems)} systems")
        return []
    save_grid_inputs(store, digits.images[: config.grid_images], indexed[0][1], config)
    frechet = digits.reference.frechet
    store.save_extra(FRECHET_REFERENCE, {"mean": frechet.mean, "cov": frechet.cov}, {})
    done = store.done()
    planned = len(indexed) * len(config.strengths) * (2 if config.match_snr else 1) + (
        len(indexed) if config.match_information is not None else 0)
    # Shards of this run alive on this host, whatever launched them (diffbench.shards).
    registry = Neighbours(run_digest(config)) if shard is not None else nullcontext()
    with (tqdm(total=planned, desc="rows", unit="row") as bar,
          start_run(config.experiment, run_name="compare", params=config.model_dump()) as run,
          registry as neighbours):

        def add(row_id: dict[str, Any], measure) -> int:
            """Row ``row_id`` from disk when it is there, else measured, stored and logged."""
            bar.set_postfix_str(f"{row_id['name']} {row_id['view']} s{row_id['strength']:g}")
            key = row_key({**row_id, "seed": config.seed})
            if key in done:
                bar.update()
                return done[key]
            beside = neighbours is not None and neighbours.busy()
            row, tensors = measure()
            beside = beside or (neighbours is not None and neighbours.busy())
            if beside:  # another shard ran on this host while the row was timed
                row = {**row, "shared_machine": True}
            row = make_row(**row)  # every field checked against the row model
            index = store.append(row, tensors)
            log_row(run, config, row)
            print_row(row)
            bar.update()
            return index

        def measured(system: System, strength: float, view: str, extra: dict[str, Any]):
            def measure():
                try:
                    row, outputs, scores = measure_row(system, judge, digits, strength, config,
                                                       count, view)
                except NonFiniteOutput as failure:  # the row records it; the system stops
                    print(f"{system.name:>14}: stopped: {failure}")
                    return ({"view": view, **what_ran(system, strength, count),
                             **failure.fields(), **extra, **facts}, {})
                return ({**row, **extra, **facts},
                        {"outputs": outputs[: config.grid_images], **per_digit_tensors(scores)})
            return measure

        def failed(index: int) -> bool:
            return bool(store.row(index).get("failure"))

        for system_index, system in indexed:
            used = ("classifier.safetensors", f"{NOISY_CLASSIFIERS[system.space]}.safetensors")
            hashes = {name: judge_hashes[name] for name in used if name in judge_hashes}
            facts = {**provenance, **settings_fields(getattr(system, "settings", {})),
                     "checkpoint_sha256": {**hashes, **system.checkpoint_sha256()},
                     "system_index": system_index, "shared_machine": shared_machine}
            count = counts[system_index]
            identity = {"name": system.name, "checkpoint_sha256": facts["checkpoint_sha256"],
                        "num_images": count}
            own = {}  # strength -> index of this system's equal-strength row
            for strength in config.strengths:
                own[strength] = add({**identity, "view": "equal_strength", "strength": strength},
                                    measured(system, strength, "equal_strength", {}))
                if failed(own[strength]):
                    break
            if any(map(failed, own.values())):
                continue  # a failed system is not measured further
            if config.match_information is not None:
                matched = match_information(system, judge, digits.first(count),
                                            config.match_information, config.seed)
                if matched is None:
                    print(f"{system.name:>14}: its noised accuracy never equals "
                          f"{config.match_information:g} on the start-timestep grid; no "
                          f"equal-information row")
                elif failed(add({**identity, "view": "equal_information",
                                 "strength": matched["strength"]},
                                measured(system, matched["strength"], "equal_information",
                                         matched))):
                    continue
            if config.match_snr:
                for strength in config.strengths:
                    t = exact_start(1000, strength)  # the VP start; T = 1000 for every network
                    at = strength_for_timestep(system, t)
                    snr = {"match_snr_of_strength": strength, "matched_timestep": t}
                    if at in own:  # a VP system's own start: its row, not rerun
                        i = own[at]
                        add({**identity, "view": "equal_snr", "strength": at},
                            lambda i=i, snr=snr: ({**store.row(i), "view": "equal_snr", **snr},
                                                  store.tensors(i)))
                    elif failed(add({**identity, "view": "equal_snr", "strength": at},
                                    measured(system, at, "equal_snr", snr))):
                        break
        bar.close()
        results, files = write_reports(store)
        for path in files:
            run.log_artifact(path)
        run.log_table(table_columns(results), "results_table.json")
    return results


def run_digest(config: CompareConfig) -> str:
    """The same short digest for every shard of one comparison: its config's."""
    text = json.dumps(config.model_dump(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expected_cost(system: System, config: CompareConfig, num_images: int) -> float:
    """Network evaluations times digits of a system's rows: what balances the shards."""
    views = 2 if config.match_snr else 1
    return views * num_images * sum(system.plan(s).nfe for s in config.strengths)


def merge(dirs: Sequence[str | Path], out: str | Path,
          overwrite: bool = False) -> tuple[list[dict[str, Any]], list[Path]]:
    """Join the shards of one comparison (``diffbench merge``) into ``out``, rows in the
    comparison's system order, then its reports; shards of different runs (config, seed,
    digits or checkpoints) or a missing or repeated shard are refused, naming the difference.
    ``out`` may not be (inside) a shard; an earlier run there is replaced only with
    ``overwrite``. The merge is built in a staging folder and moved into ``out`` when done."""
    check_merge_target(dirs, out)
    RowStore.claim(out, overwrite=overwrite, resumable=False)
    stores = [RowStore.read(d) for d in dirs]
    runs = [store.run() for store in stores]
    base = {k: v for k, v in runs[0].items() if k != "shard"}
    for directory, run in zip(dirs, runs):
        if "shard" not in run:
            raise InputError(f"{directory} is not a shard (it was run without --shard)")
        difference = first_difference(base, {k: v for k, v in run.items() if k != "shard"})
        if difference:
            raise InputError(f"{directory} is a shard of another run than {dirs[0]}: "
                             f"{difference}")
    count = runs[0]["shard"][1]
    found = sorted(run["shard"][0] for run in runs)
    if found != list(range(count)) or any(run["shard"][1] != count for run in runs):
        given = ", ".join(f"{run['shard'][0]}/{run['shard'][1]}" for run in runs)
        raise InputError(f"merge needs shards 0..{count - 1} of {count} once each, got {given}")
    staged = staging_dir(out)
    try:
        merged = RowStore.open(staged, base, resume=False)
        order = sorted((row["system_index"], position, i)
                       for position, store in enumerate(stores)
                       for i, row in enumerate(store.rows()))
        for _, position, i in order:
            merged.append(stores[position].row(i), stores[position].tensors(i))
        first = min(range(len(stores)), key=lambda p: min(
            (r["system_index"] for r in stores[p].rows()), default=len(order) + 1))
        for extra in (GRID_INPUTS, FRECHET_REFERENCE):
            merged.save_extra(extra, *stores[first].load_extra(extra))
        results, files = write_reports(merged)
        publish(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # a failed merge leaves nothing behind
    return results, [Path(out) / path.relative_to(staged) for path in files]


def check_merge_target(dirs: Sequence[str | Path], out: str | Path) -> None:
    """Refuse an ``out`` that is one of the shards ``dirs`` or inside one (it would be
    written over what it reads)."""
    target = Path(out).resolve()
    for directory in dirs:
        source = Path(directory).resolve()
        if target == source or target.is_relative_to(source):
            raise InputError(f"--out {out} is the shard {directory} or inside it; allowed: a "
                             f"folder outside every shard (e.g. the shards' parent)")


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


def print_row(row: dict[str, Any]) -> None:
    if row.get("failure"):
        return  # said when it happened
    lo, hi = row["preservation_ci95"]
    print(f"{row['name']:>14} strength {row['strength']:.3g} (t={row['start_timestep']}): "
          f"{row['sec_per_image']:.4f} s/image, mse {row['mse']:.4f}, preservation "
          f"{row['preservation']:.3f} [{lo:.3f}, {hi:.3f}] (noised accuracy "
          f"{row['noised_accuracy']:.3f})")


def log_row(run: Any, config: CompareConfig, row: dict[str, Any]) -> None:
    """One nested MLflow run per row, as it is measured: what ran (the row model's ``param``
    fields: system, space, sampler, steps, NFE, strength, ...) as params, its figures (its
    ``metric`` fields) as metrics, so MLflow's own compare views plot latency against MSE across
    rows. A no-op when tracking is off."""
    if not run.enabled:
        return
    params = {k: row[k] for k in PARAMS if k in row}
    with start_run(config.experiment, run_name=f"{row['name']} {row['view']} "
                   f"s{row['strength']:g}", params=params, nested=True) as sub:
        sub.log_metrics({k: v for k, v in row.items() if k in METRICS
                         and isinstance(v, int | float) and not isinstance(v, bool)})


def table_columns(results: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The results as columns of scalars, for ``mlflow.log_table``."""
    keys = [k for k in FIELDS if any(k in r for r in results)]
    return {k: [r.get(k) if not isinstance(r.get(k), list | dict) else json.dumps(r.get(k))
                for r in results] for k in keys}
