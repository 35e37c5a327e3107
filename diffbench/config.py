"""Run configuration: YAML -> typed, validated config, with ``--set key=value`` overrides.

A config file is a mapping; ``--set a.b=value`` sets a nested key, the value parsed as YAML
(``--set model.channel_mults=[1,2]``). Any mistake raises :class:`ConfigError` (a ValueError)
naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffbench.models import ClassifierConfig, PeerConfig, UNetConfig, VAEConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
KINDS = ("pixel", "vae", "latent", "classifier", "peer")
MODEL_CONFIGS = {
    "pixel": UNetConfig,
    "latent": UNetConfig,
    "vae": VAEConfig,
    "classifier": ClassifierConfig,
    "peer": PeerConfig,
}


class ConfigError(ValueError):
    """A config file or override that cannot be used."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(_Strict):
    """The forward process (see :class:`diffbench.schedule.NoiseSchedule`)."""

    name: Literal["linear", "scaled_linear", "cosine"] = "linear"
    num_timesteps: int = Field(1000, ge=1)


class TrainConfig(_Strict):
    """One training run of one model kind."""

    kind: Literal["pixel", "vae", "latent", "classifier", "peer"]
    name: str | None = Field(None, description="checkpoint file stem; default: the kind")
    steps: int = Field(ge=1, description="optimizer steps (per process under DDP)")
    batch_size: int = Field(128, ge=1, description="images per step and process")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay floor, times lr")
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1, description="diffusion models only")
    time_budget_s: float | None = Field(
        None, gt=0, description="also stop once this many seconds of training have run"
    )
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(25, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data_dir: str | None = None
    out: str = "runs"
    train_images: int | None = Field(None, ge=1, description="first N training images; all if null")
    experiment: str = "diffbench-train"
    schedule: ScheduleConfig = ScheduleConfig()
    model: dict[str, Any] = {}
    # Kind-specific settings.
    vae_checkpoint: str | None = Field(None, description="latent: the trained VAE to encode with")
    kl_weight: float = Field(1e-4, ge=0, description="vae: weight of the KL term")
    noise_max_timestep: int | None = Field(
        None, ge=1, description="classifier: train on x_t with t < this (needs noise_aware)"
    )

    def build_model_config(self) -> Any:
        """The model's dataclass config built from ``model`` (lists become tuples)."""
        cls = MODEL_CONFIGS[self.kind]
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(self.model) - fields)
        if unknown:
            raise ConfigError(
                f"model: unknown key(s) {unknown} for {cls.__name__}; allowed: {sorted(fields)}"
            )
        base = UNetConfig.latent() if self.kind == "latent" else cls()
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.model.items()}
        return dataclasses.replace(base, **values)


class SystemConfig(_Strict):
    """One image-to-image system of a comparison."""

    space: Literal["pixel", "latent"]
    sampler: Literal["ddpm", "ddim"]
    steps: int | None = Field(None, ge=1, description="null: 1000 for DDPM, 50 for DDIM")
    eta: float = Field(0.0, ge=0, le=1)


class CompareConfig(_Strict):
    """``diffbench compare``: systems x strengths on the same test digits and seeds."""

    checkpoints: str = "fixtures/checkpoints"
    out: str = "results"
    systems: list[SystemConfig] = Field(min_length=1)
    strengths: list[Annotated[float, Field(gt=0, le=1)]] = Field([0.3, 0.5], min_length=1)
    num_images: int = Field(64, ge=1, description="test digits scored per system and strength")
    grid_images: int = Field(8, ge=1, description="rows of the comparison grid")
    timing_batch: int = Field(8, ge=1, description="images per timed call")
    repeats: int = Field(3, ge=1, description="timed calls per system and strength")
    warmup: int = Field(1, ge=0, description="untimed calls per system before timing")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data_dir: str | None = None
    experiment: str = "diffbench-compare"


def default_config_path(kind: str) -> Path:
    return CONFIG_DIR / f"train_{kind}.yaml"


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` (value parsed as YAML) to the nested mapping ``raw``."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML ({error})") from None
    *parents, leaf = key.strip().split(".")
    node: Any = raw
    for part in parents:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            node = node[_list_index(node, part, assignment)]
        if not isinstance(node, dict | list):
            raise ConfigError(f"--set {assignment!r}: {part!r} holds neither a mapping nor a list")
    if isinstance(node, list):
        node[_list_index(node, leaf, assignment)] = value
    else:
        node[leaf] = value


def _list_index(items: list, part: str, assignment: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(
            f"--set {assignment!r}: {part!r} is not an index of a {len(items)}-item list"
        )
    return int(part)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(raw).__name__}")
    return raw


def load_train_config(
    kind: str,
    path: str | Path | None = None,
    overrides: list[str] = (),
    **flags: Any,
) -> TrainConfig:
    """The config for ``kind``: YAML file (default ``configs/train_<kind>.yaml``), then
    ``--set`` overrides, then the explicit CLI flags that are not None."""
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; allowed: {', '.join(KINDS)}")
    raw = load_yaml(path or default_config_path(kind))
    raw.setdefault("kind", kind)
    if raw["kind"] != kind:
        raise ConfigError(f"config {path} is for kind {raw['kind']!r}, not {kind!r}")
    for assignment in overrides:
        apply_override(raw, assignment)
    raw.update({key: value for key, value in flags.items() if value is not None})
    return validate(TrainConfig, raw)


def load_compare_config(
    path: str | Path | None = None, overrides: list[str] = (), **flags: Any
) -> CompareConfig:
    """configs/compare.yaml (or ``path``), then ``--set`` overrides, then CLI flags; the flag
    ``steps`` sets the step count of every DDIM system."""
    raw = load_yaml(path or CONFIG_DIR / "compare.yaml")
    for assignment in overrides:
        apply_override(raw, assignment)
    steps = flags.pop("steps", None)
    if steps is not None:
        for system in raw.get("systems", []):
            if isinstance(system, dict) and system.get("sampler") == "ddim":
                system["steps"] = steps
    raw.update({key: value for key, value in flags.items() if value is not None})
    return validate(CompareConfig, raw)


def validate(model: type[BaseModel], raw: dict[str, Any]) -> Any:
    """``model.model_validate(raw)``, with pydantic's errors turned into one ConfigError."""
    try:
        config = model.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']} (got {e.get('input')!r})"
            for e in error.errors()
        )
        raise ConfigError(f"invalid config: {problems}") from None
    if hasattr(config, "build_model_config"):
        config.build_model_config()  # unknown model keys fail now, not mid-run
    return config
