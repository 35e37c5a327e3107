"""A comparison's systems, resolved once, where the comparison starts: built, named apart,
checked, and described to the plan (:class:`~diffbench.compare.plan.PlannedSystem`).

Names: a system's name labels its rows, tables, plots and MLflow runs, and pairs rows with the
reference, so two systems of one comparison never share one. A config system without a
``name`` is named by its sampler (``DDIM-2``, :attr:`diffbench.systems.translate.Translator.name`);
when two such generated names are equal, each gets the fields in which the systems differ and it is
not at the default (``DDIM-2`` and ``DDIM-2 eta=1``). Names given in the config or by a System
object are kept; two systems left with one name are refused with one error naming both.

Each row of a system carries ``system_config``: every setting of the system that changes its
outputs (the config's fields as resolved: sampler, steps, spacing, eta, shift, prediction,
model; for a System object what its protocol says), part of the row's key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffbench.compare.plan import PlannedSystem
from diffbench.core.errors import InputError
from diffbench.core.system import System, check_system
from diffbench.io.config import CompareConfig, SystemConfig
from diffbench.measure.information import strength_for_timestep
from diffbench.measure.metrics import NOISY_CLASSIFIERS
from diffbench.results.row import settings_fields
from diffbench.sampling import exact_start
from diffbench.systems.translate import Translator

VP_TIMESTEPS = 1000
"""The VP schedule length whose start an equal-SNR row matches (``int(strength * 1000) - 1``)."""
NOT_IN_NAMES = ("name",)
"""SystemConfig fields a generated name is never told apart by."""


def check_counts(config: CompareConfig) -> None:
    """Each system scores at least the grid's digits."""
    for k, system in enumerate(config.systems):
        if system.num_images is not None and system.num_images < config.grid_images:
            raise InputError(f"systems[{k}].num_images {system.num_images} is below grid_images "
                             f"{config.grid_images}: a system scores at least the grid's digits")


def build_systems(config: CompareConfig, objects: Sequence[System],
                  device: torch.device) -> list[System]:
    """The config's systems as Translators, named apart, then ``objects``, each checked."""
    for system in objects:
        check_system(system)
    options = {"compile": config.compile, "noise_device": config.noise_device, "tf32": config.tf32}
    built = [Translator.from_config(s, config.checkpoints, device, **options)
             for s in config.systems]
    names = distinct_names(config.systems, [s.name for s in built])
    for k, name in enumerate(names):
        if name != built[k].name:  # a generated name told apart: the same system, renamed
            named = config.systems[k].model_copy(update={"name": name})
            built[k] = Translator.from_config(named, config.checkpoints, device, **options)
    systems = [*built, *objects]
    if not systems:
        raise InputError("nothing to compare: give at least one system")
    refuse_shared_names(systems, config.systems)
    return systems


def distinct_names(configs: Sequence[SystemConfig], generated: Sequence[str]) -> list[str]:
    """``generated`` (the config systems' names), those generated for several systems told
    apart by the fields in which the systems differ, each shown where it is not the default."""
    names = list(generated)
    groups: dict[str, list[int]] = {}
    for k, config in enumerate(configs):
        if config.name is None:
            groups.setdefault(generated[k], []).append(k)
    for base, members in groups.items():
        if len(members) < 2:
            continue
        fields = [configs[k].model_dump(exclude=set(NOT_IN_NAMES)) for k in members]
        differ = [key for key in fields[0] if len({repr(f[key]) for f in fields}) > 1]
        for k, values in zip(members, fields):
            shown = [f"{key}={_value(values[key])}" for key in differ
                     if values[key] != SystemConfig.model_fields[key].default]
            names[k] = " ".join([base, *shown])
    return names


def refuse_shared_names(systems: Sequence[System], configs: Sequence[SystemConfig]) -> None:
    """One InputError naming the first name two systems share, and both systems."""
    seen: dict[str, int] = {}
    for k, system in enumerate(systems):
        if system.name in seen:
            first, second = (_describe(i, systems, configs) for i in (seen[system.name], k))
            raise InputError(f"two systems are named {system.name!r}: {first} and {second}; "
                             f"allowed: distinct names (give one a `name:`)")
        seen[system.name] = k


def _describe(k: int, systems: Sequence[System], configs: Sequence[SystemConfig]) -> str:
    if k < len(configs):
        set_fields = configs[k].model_dump(exclude_defaults=True)
        return f"systems[{k}] {{{', '.join(f'{key}: {v}' for key, v in set_fields.items())}}}"
    return f"the {type(systems[k]).__name__} object {systems[k].name!r}"


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def system_config(system: System, config: SystemConfig | None) -> dict[str, Any]:
    """Every setting of ``system`` that changes its outputs, as resolved (see the module)."""
    resolved = {"space": system.space, "sampler": system.sampler_name,
                "steps": system.num_steps, "prediction": getattr(system, "prediction", "eps")}
    if config is None:
        return resolved
    spacing = getattr(getattr(system, "sampler", None), "spacing", config.spacing)
    return {**config.model_dump(exclude={"name", "num_images"}), **resolved, "spacing": spacing}


def digit_counts(config: CompareConfig, count: int) -> list[int]:
    """Digits each of ``count`` systems scores: a config system's own count, at most the
    comparison's (so ``--num-images 8`` is a quick run); a System object the comparison's."""
    own = [min(s.num_images or config.num_images, config.num_images) for s in config.systems]
    return own + [config.num_images] * (count - len(own))


def snr_timesteps(config: CompareConfig) -> dict[float, int] | None:
    """Strength -> the VP start its equal-SNR rows match; None without the equal-SNR view."""
    if not config.match_snr:
        return None
    return {s: exact_start(VP_TIMESTEPS, s) for s in config.strengths}


def plan_systems(config: CompareConfig, systems: Sequence[System],
                 judge_hashes: dict[str, str], provenance: dict[str, Any]) -> list[PlannedSystem]:
    """Each system as the plan sees it. Every strength is checked here, once: each gives the
    system a step (an error now, not mid-run), and so does each equal-SNR strength."""
    counts = digit_counts(config, len(systems))
    timesteps = snr_timesteps(config) or {}
    planned = []
    for k, system in enumerate(systems):
        snr = {s: strength_for_timestep(system, t) for s, t in timesteps.items()}
        nfe = {s: system.plan(s).nfe for s in (*config.strengths, *snr.values())}
        used = ("classifier.safetensors", f"{NOISY_CLASSIFIERS[system.space]}.safetensors")
        hashes = {name: judge_hashes[name] for name in used if name in judge_hashes}
        facts = {**provenance, **settings_fields(getattr(system, "settings", {})),
                 "checkpoint_sha256": {**hashes, **system.checkpoint_sha256()},
                 "system_index": k, "system_config": system_config(
                     system, config.systems[k] if k < len(config.systems) else None)}
        planned.append(PlannedSystem(k, system.name, counts[k], facts, snr, nfe))
    return planned
