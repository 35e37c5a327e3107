"""Run configuration: the typed configs of training and comparison runs, loaded from YAML with
``--set key=value`` overrides (:mod:`diffbench.io.config_files`; a mistake is one ConfigError)."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from diffbench.core.choices import MAX_SCORED_DIGITS, MODEL_KINDS
from diffbench.core.plugins import is_model_name, is_spec, model_choices
from diffbench.core.resources import checkpoints_dir, configs_dir
from diffbench.core.runtime import COMPILE_MODES, DEVICES, MAX_SEED, NOISE_DEVICES
from diffbench.core.system import SPACES
from diffbench.io.config_files import (
    ConfigError,
    apply_override,
    as_tuples,
    load_yaml,
    short_repr,
    type_name,
    validate,
)
from diffbench.models import ClassifierConfig, PeerConfig, UNetConfig, VAEConfig
from diffbench.sampling import SAMPLERS, SPACINGS, sampler_class
from diffbench.sampling.prediction import PREDICTIONS

MODEL_CONFIGS = dict(zip(MODEL_KINDS, (UNetConfig, UNetConfig, VAEConfig, ClassifierConfig,
                                        PeerConfig), strict=True))
"""Model kinds `diffbench train` trains (:data:`diffbench.core.choices.MODEL_KINDS`) -> their
model's config dataclass."""
KINDS = MODEL_KINDS
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
"""A checkpoint name: a file stem that stays inside the output folder."""
_FINITE = ConfigDict(allow_inf_nan=False, strict=True)
Int = Annotated[int, Strict()]
"""An integer field: ``true`` or ``3.0`` is not an int (YAML's ``steps: true`` is a mistake)."""
Float = Annotated[float, Strict()]
"""A number field: an int or a float, never a bool or a string."""
Bool = Annotated[bool, Strict()]
"""A switch: ``true`` or ``false``, never ``1`` or ``"yes"``."""
# What parsing YAML text can raise: its own errors, and e.g. ValueError for the date 2024-13-45.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ScheduleConfig(_Strict):
    """The forward process (see :class:`diffbench.sampling.schedule.NoiseSchedule`)."""

    name: Literal["linear", "scaled_linear", "cosine"] = "linear"
    num_timesteps: Int = Field(1000, ge=1)


class TrainConfig(_Strict):
    """One training run of one model kind."""

    kind: Literal[KINDS]
    name: str | None = Field(None, description="checkpoint file stem; default: the kind")
    steps: Int = Field(ge=1, description="optimizer steps (per process under DDP)")
    batch_size: Int = Field(128, ge=1, description="images per step and process")
    lr: Float = Field(2e-3, gt=0)
    weight_decay: Float = Field(0.0, ge=0)
    warmup_steps: Int = Field(100, ge=0)
    min_lr_ratio: Float = Field(0.1, ge=0, le=1, description="cosine decay floor, times lr")
    grad_clip: Float = Field(1.0, gt=0)
    ema_decay: Float = Field(0.999, ge=0, lt=1, description="diffusion models only")
    min_snr_gamma: Float | None = Field(
        None, gt=0, description="diffusion models: weight each example's noise-prediction loss "
        "by min(SNR_t, gamma) / SNR_t (Min-SNR, Hang et al. 2023); null: the simple DDPM loss"
    )
    prediction: Literal[PREDICTIONS] = Field(
        "eps", description="pixel / latent: eps (the simple DDPM loss), v (Salimans & Ho 2022), "
        "flow (rectified flow's velocity eps - x0, sigma logit-normal as in SD3), consistency "
        "(ECT) or meanflow (MeanFlow's average velocity), the last two tuned from init_from"
    )
    logit_mean: Float = Field(0.0, description="mean of logit(sigma): SD3 0, ECT -1.1, MF -0.4")
    logit_std: Float = Field(1.0, gt=0, description="std of logit(sigma): SD3 1, ECT 2, MF 1")
    init_from: str | None = Field(None, description="consistency / meanflow: the flow checkpoint "
                                  "they start from (its CPU seconds count in their budget)")
    consistency_stages: Int = Field(8, ge=1, description="ECT stages; the gap halves in each")
    meanflow_ratio: Float = Field(0.25, ge=0, le=1, description="share with r != t (MeanFlow 25%)")
    meanflow_power: Float = Field(1.0, ge=0, description="p of MeanFlow's weight 1/(|e|^2 + c)^p")
    time_budget_s: Float | None = Field(
        None, gt=0, description="also stop once this many seconds of training have run"
    )
    cpu_budget_s: Float | None = Field(
        None, gt=0, description="train until the steps have used this many CPU-seconds (all "
        "threads, time.process_time); the learning-rate schedule follows the budget's progress, "
        "so it completes whether the budget or `steps` ends the run (a CPU measure: on CUDA use "
        "time_budget_s)"
    )
    threads: Int | None = Field(
        None, ge=1, description="torch CPU threads for this run (null: torch's default)"
    )
    checkpoint_every: Int = Field(500, ge=1)
    log_every: Int = Field(25, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    device: Literal[DEVICES] = "auto"
    data_dir: str | None = None
    out: str = "runs"
    train_images: Int | None = Field(None, ge=1, description="first N training images; all if null")
    experiment: str = "diffbench-train"
    schedule: ScheduleConfig = ScheduleConfig()
    model: dict[str, Any] = {}
    # Kind-specific settings.
    vae_checkpoint: str | None = Field(None, description="latent: the trained VAE to encode with")
    kl_weight: Float = Field(1e-4, ge=0, description="vae: weight of the KL term")
    noise_max_timestep: Int | None = Field(
        None, ge=1, description="classifier: train on x_t with t < this (needs noise_aware)"
    )
    space: Literal[SPACES] = Field(
        "pixel", description="classifier: classify digits (pixel) or the VAE's latents (latent)"
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        """A file stem inside ``out``: no folder part, no ``..``, no leading dot."""
        if value is not None and not NAME_PATTERN.fullmatch(value):
            raise PydanticCustomError(
                "name_error", "a checkpoint name is letters, digits, '.', '_' and '-', not "
                "starting with '.' (it names files inside out)", {})
        return value

    def build_model_config(self) -> Any:
        """The model's dataclass config built from ``model``, each value checked against its
        field's type (lists become tuples)."""
        cls = MODEL_CONFIGS[self.kind]
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(self.model) - fields))
        if unknown:
            raise ConfigError(
                f"model: unknown key(s) {unknown} for {cls.__name__}; allowed: {sorted(fields)}"
            )
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in self.model.items():
            try:
                check = TypeAdapter(hints[key], config=_FINITE)
                values[key] = check.validate_python(as_tuples(value))
            except ValidationError as error:
                raise ConfigError(
                    f"model.{key}: {error.errors()[0]['msg']} (got {short_repr(value)}); "
                    f"allowed: {type_name(hints[key])}"
                ) from None
        base = UNetConfig.latent() if self.kind == "latent" else cls()
        return dataclasses.replace(base, **values)


class SystemConfig(_Strict):
    """One image-to-image system of a comparison."""

    space: Literal[SPACES]
    sampler: str = Field(description="a registered sampler or 'package.module:Name'")
    steps: Int | None = Field(None, ge=1, description="null: 1000 for DDPM, 50 otherwise")
    eta: Float = Field(0.0, ge=0, le=1)
    spacing: Literal[SPACINGS] | None = Field(
        None, description="timestep spacing: leading, trailing or linspace; null: the sampler's "
        "default (leading for DDPM and DDIM, trailing for the solvers, linspace for flow)")
    prediction: Literal[PREDICTIONS] = Field(
        "eps", description="the network: eps (the shipped UNets), flow, consistency or meanflow "
        "(the {space}_{prediction} checkpoints); with flow, euler, heun and dpmsolver++ run their "
        "flow versions")
    shift: Float = Field(1.0, gt=0, description="flow samplers: SD3's timestep shift (SD3: 3)")
    name: str | None = Field(None, description="its name in the results; null: e.g. DDIM-50")
    num_images: Int | None = Field(
        None, ge=1, le=MAX_SCORED_DIGITS, description="digits this system scores, at most the "
        "comparison's num_images; null: num_images (fewer for a slow system: its intervals "
        "widen, and it is paired with its reference on the digits both scored)")
    model: str | None = Field(None, description="'package.module:factory', an installed model "
                              "or a UNet2DModel folder: model(x_t, t) -> eps; null: checkpoint")

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        """A registered name, or a ``package.module:Name`` that imports as a Sampler class."""
        if value not in SAMPLERS and not is_spec(value):
            names = [repr(name) for name in SAMPLERS]
            expected = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}",
                {"expected": expected, "hint": "or a plug-in 'package.module:Name'"},
            )
        try:
            sampler_class(value)
        except ValueError as error:
            problem = {"problem": str(error)}
            raise PydanticCustomError("plugin_error", "{problem}", problem) from None
        return value

    @field_validator("model")
    @classmethod
    def _model_spec(cls, value: str | None) -> str | None:
        if value is not None and not is_model_name(value):
            raise PydanticCustomError("plugin_error", "{choices}", {"choices": model_choices()})
        return value


class CompareConfig(_Strict):
    """``diffbench compare``: systems x strengths on the same test digits and seeds."""

    checkpoints: str = Field(default_factory=lambda: str(checkpoints_dir()),
                             description="default: the shipped ones (diffbench.core.resources)")
    out: str = "results"
    systems: list[SystemConfig] = Field(min_length=1)
    strengths: list[Annotated[Float, Field(gt=0, le=1)]] = Field([0.3, 0.5], min_length=1)
    num_images: Int = Field(64, ge=1, le=MAX_SCORED_DIGITS, description="test digits scored per "
                            "system and strength (the rest are the Frechet and KID reference)")
    grid_images: Int = Field(8, ge=1, le=MAX_SCORED_DIGITS, description="the grid's rows")
    timing_batch: Int = Field(8, ge=1, le=MAX_SCORED_DIGITS, description="images per timed call")
    repeats: Int = Field(3, ge=1, description="timed calls per system and strength")
    warmup: Int = Field(1, ge=0, description="untimed calls per system and strength first")
    match_information: Float | None = Field(
        None, gt=0, lt=1, description="also compare each system at the strength where its own "
        "space's noised accuracy equals this (null: equal strengths only)")
    reference: str = Field(
        "DDIM-50", description="the system every row is paired against on the same digits "
        "(its name in pixel space; LDM- + it in latent space): results gain the paired MSE and "
        "preservation differences with 95% intervals")
    match_snr: Bool = Field(
        False, description="also compare each system, per strength, at the strength whose start "
        "has the signal-to-noise ratio of the VP start t = int(strength * 1000) - 1 (flow "
        "inputs are far less noisy than VP ones at equal strength)")
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    device: Literal[DEVICES] = "auto"
    compile: Literal[COMPILE_MODES] | None = Field(None, description="null: eager")
    noise_device: Literal[NOISE_DEVICES] = "device"
    tf32: Bool = Field(False, description="TF32 matmuls and convolutions (CUDA only)")
    data_dir: str | None = None
    experiment: str = "diffbench-compare"


def default_config_path(kind: str) -> Path:
    return configs_dir() / f"train_{kind}.yaml"


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
    ``steps`` sets the step count of every few-step system (DDIM, plug-ins; not DDPM)."""
    raw = load_yaml(path or configs_dir() / "compare.yaml")
    for assignment in overrides:
        apply_override(raw, assignment)
    steps = flags.pop("steps", None)
    if steps is not None and isinstance(raw.get("systems"), list):
        for system in raw["systems"]:
            if isinstance(system, dict) and _few_step(system.get("sampler")):
                system["steps"] = steps
    raw.update({key: value for key, value in flags.items() if value is not None})
    return validate(CompareConfig, raw)


def _few_step(sampler: Any) -> bool:
    """Whether ``sampler`` runs a chosen step count (DDIM, a plug-in), not every timestep."""
    try:
        return sampler_class(sampler).default_steps is not None
    except (TypeError, ValueError):  # not a sampler: validation reports it
        return False
