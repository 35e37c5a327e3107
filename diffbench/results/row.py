"""The results row: every field a row of ``diffbench compare`` or ``diffbench evaluate`` may
carry, each defined once here with its meaning and unit.

``results.jsonl``, ``results.json``, ``evaluation.json``'s image-to-image rows, the benches'
``extra_info`` and the MLflow params and metrics of a row all come from :func:`make_row`, which
checks every field against :class:`ResultRow` (an unknown name or a wrong type is an error, not
a new column) and records :data:`SCHEMA_VERSION`. A row holds the fields that were measured:
``evaluate`` has no latency, an equal-strength row no matched timestep.

``role`` says where a field goes in MLflow: ``param`` (what ran; a row's nested run is named by
these), ``metric`` (a number measured; its 95% interval as ``<name>_ci95_lo`` and ``_hi``:
:func:`metrics_of`), or ``fact`` (provenance, not logged per row). ``column`` (title, format,
scale) makes a field a column of the results table, in field order (:data:`COLUMNS`), shown
with its interval; the model cards' tables take their formats from it too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 4
"""4: a row carries ``system_config``, every setting of its system that changes its outputs,
and is keyed by it (:func:`diffbench.results.rowstore.row_key`): earlier rows cannot be resumed
(two systems differing only in, say, eta had rows no field told apart). 3:
``frechet_distance`` is bias-corrected, on the reference's principal components, and ``kid``
is measured against the whole reference (:mod:`diffbench.measure.feature_distance`); earlier rows'
values of them were another quantity. 2: ``steps`` is the sampler's step count and ``nfe`` the
network evaluations (version 1 had only ``steps``, holding the NFE); the scoring pass's seconds
are ``scoring_sec_per_image``, apart from the latency ``sec_per_image``. Rows without a version
are version 1 (:func:`upgrade`)."""

DISTANCES = ("frechet_distance", "frechet_distance_ci95", "kid", "kid_ci95")
"""The fields whose meaning changed in version 3."""


def _field(description: str, unit: str | None = None, role: str = "metric",
           default: Any = None, column: tuple | None = None) -> Any:
    return Field(default, description=description,
                 json_schema_extra={"unit": unit, "role": role, "column": column})


Interval = list[float | None]  # [low, high]: a 95% interval


class ResultRow(BaseModel):
    """One system at one strength in one view: what ran, its fidelity, latency and cost."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = _field("the row schema's version (see SCHEMA_VERSION)", role="fact",
                                 default=SCHEMA_VERSION)
    # what ran
    view: str | None = _field("equal_strength, equal_information or equal_snr", role="param")
    name: str | None = _field("the system's name, e.g. DDIM-50, LDM-RF-Euler-10", role="param",
                              column=("system", "{}"))
    space: str | None = _field("pixel or latent", role="param")
    prediction: str | None = _field("what the network predicts: eps, v or flow", role="param")
    sampler: str | None = _field("registered sampler name or package.module:Name",
                                 role="param")
    steps: int | None = _field("the sampler's step count n (the 50 of DDIM-50)", "steps",
                               role="param")
    nfe: int | None = _field("network evaluations of one translation from the start",
                             "evaluations", role="param", column=("NFE", "{}"))
    strength: float | None = _field("img2img strength in (0, 1]", role="param",
                                    column=("strength", "{:.3g}"))
    start_timestep: int | None = _field(
        "the VP timestep the input is noised to (a flow row: the VP timestep of its SNR)",
        "timestep", role="param", column=("start t", "{}"))
    start_sigma: float | None = _field("a flow row's start sigma (None on the VP path)",
                                       role="param")
    start_snr: float | None = _field("signal-to-noise ratio of the noised input", "ratio",
                                     role="param", column=("start SNR", "{:.3g}"))
    num_images: int | None = _field("digits scored", "images", role="param",
                                    column=("digits", "{}"))
    # fidelity, each with its 95% interval
    mse: float | None = _field("mean squared error to the source digit, data in [-1, 1]",
                               column=("MSE", "{:.4f}"))
    mse_ci95: Interval | None = _field("95% bootstrap interval of mse")
    psnr: float | None = _field("peak signal-to-noise ratio (peak 2)", "dB",
                                column=("PSNR dB", "{:.2f}"))
    psnr_ci95: Interval | None = _field("95% bootstrap interval of psnr", "dB")
    ssim: float | None = _field("structural similarity to the source digit",
                                column=("SSIM", "{:.3f}"))
    ssim_ci95: Interval | None = _field("95% bootstrap interval of ssim")
    preservation: float | None = _field("share of outputs the classifier reads as the source's "
                                        "label", "share", column=("preservation", "{:.3f}"))
    preservation_ci95: Interval | None = _field("95% Wilson interval of preservation", "share")
    noised_accuracy: float | None = _field(
        "the noise-aware classifier's accuracy on the noised inputs, in the system's own space",
        "share", column=("noised acc.", "{:.3f}"))
    noised_accuracy_ci95: Interval | None = _field("95% Wilson interval of noised_accuracy",
                                                   "share")
    noised_space: str | None = _field("the space noised_accuracy was read in", role="fact")
    frechet_distance: float | None = _field(
        "bias-corrected Frechet distance of classifier features to held-out real digits, on "
        "their top 10 principal components (None below 30 digits)", column=("Frechet", "{:.2f}"))
    frechet_distance_ci95: Interval | None = _field(
        "95% half-sampling interval of frechet_distance")
    kid: float | None = _field(
        "kernel inception distance on classifier features, against all held-out real digits",
        column=("KID", "{:.3f}"))
    kid_ci95: Interval | None = _field("95% bootstrap interval of kid, over the outputs")
    scoring_sec_per_image: float | None = _field(
        "wall seconds per image of the whole scoring pass (batches of 250; not a latency)", "s")
    # latency: timed calls on timing_batch digits (diffbench.measure.scoring.measure_latency)
    sec_per_image: float | None = _field("median seconds per image of the timed calls", "s",
                                         column=("s / image", "{:.4f}"))
    sec_per_image_min: float | None = _field("fastest timed call, per image", "s")
    sec_per_image_max: float | None = _field("slowest timed call, per image", "s")
    sec_per_image_p50: float | None = _field("50th percentile of the timed calls, per image", "s")
    sec_per_image_p90: float | None = _field("90th percentile of the timed calls, per image", "s",
                                             column=("p90", "{:.4f}"))
    sec_per_image_p99: float | None = _field("99th percentile of the timed calls, per image", "s",
                                             column=("p99", "{:.4f}"))
    timing_repeats: int | None = _field("timed calls", "calls")
    timing_warmup: int | None = _field("untimed calls before them", "calls")
    timing_batch: int | None = _field("digits per timed call", "images")
    peak_memory_bytes: int | None = _field("peak memory of one call", "bytes",
                                           column=("peak MiB", "{:.1f}", 2**-20))
    peak_memory_method: str | None = _field("how peak_memory_bytes was measured", role="fact")
    # cost
    flops_per_image: int | None = _field("forward FLOPs of one translation", "FLOP")
    train_seconds: float | None = _field("wall seconds its networks trained", "s")
    train_cpu_seconds: float | None = _field("CPU seconds its networks trained", "s",
                                             column=("train CPU s", "{:.0f}"))
    compile_seconds: float | None = _field("seconds spent compiling during this row", "s")
    # provenance
    seed: int | None = _field("seed of the noise and the intervals", role="fact")
    device: str | None = _field("device the row ran on", role="fact")
    torch: str | None = _field("torch version", role="fact")
    compile: str | None = _field("compile mode: none, compile or cudagraphs", role="fact")
    noise_device: str | None = _field("device the noise was drawn on", role="fact")
    tf32: bool | None = _field("TF32 matmuls on CUDA", role="fact")
    channels_last: bool | None = _field("channels-last weights", role="fact")
    checkpoint_sha256: dict[str, str] | None = _field("file name -> sha256 of each checkpoint "
                                                      "the row read", role="fact")
    system_index: int | None = _field("the system's place in the comparison", role="fact")
    system_config: dict[str, Any] | None = _field(
        "every setting of the system that changes its outputs (space, sampler, steps, spacing, "
        "eta, shift, prediction, model), as resolved; part of the row's key", role="fact")
    shared_machine: bool | None = _field(
        "timed beside other shards on one machine (latency not comparable)", role="fact")
    other_settings: dict[str, Any] | None = _field(
        "settings a System reports beyond the four above (name -> value)", role="fact")
    # the matched views (diffbench.measure.information, compare's match_snr)
    match_information: float | None = _field("the noised accuracy an equal-information row "
                                             "matches", "share", role="param")
    matched_timestep: int | None = _field("the VP timestep the row was matched at", "timestep",
                                          role="param")
    noised_accuracy_curve: list[list[int | float]] | None = _field(
        "(timestep, noised accuracy) points the match was read from", role="fact")
    match_snr_of_strength: float | None = _field(
        "an equal-SNR row: the strength whose VP start's SNR it matches", role="param")
    # a system stopped by a failure (diffbench.measure.scoring.NonFiniteOutput): no figures
    failure: str | None = _field("why this system stopped here (e.g. non-finite output); its "
                                 "later rows were not measured", role="fact")
    failure_step: int | None = _field("the first sampler step (0-based) whose state went "
                                      "non-finite (None: not traceable, or after the last step)",
                                      "step", role="fact")
    failure_digits: list[int] | None = _field("the test digits (indices) whose outputs were "
                                              "non-finite", role="fact")
    # paired against the row's reference (diffbench.measure.versus)
    vs_reference: str | None = _field("the system this row is paired against", role="fact")
    vs_reference_images: int | None = _field("digits the paired figures are on (both rows "
                                             "scored them)", "images", role="fact")
    mse_vs_reference: float | None = _field("paired relative MSE difference to the reference",
                                            "ratio", column=("MSE vs ref. (paired)", "{:+.1%}"))
    mse_vs_reference_ci95: Interval | None = _field("95% paired bootstrap interval of it",
                                                    "ratio")
    preservation_vs_reference: float | None = _field(
        "paired preservation difference to the reference", "share",
        column=("preservation vs ref. (paired)", "{:+.3f}"))
    preservation_vs_reference_ci95: Interval | None = _field(
        "95% paired bootstrap interval of it", "share")
    frechet_vs_reference: float | None = _field(
        "paired difference of the bias-corrected Frechet distances to the reference",
        column=("Frechet vs ref. (paired)", "{:+.2f}"))
    frechet_vs_reference_ci95: Interval | None = _field(
        "95% paired half-sampling interval of it")
    vs_reference_resolved: dict[str, bool] | None = _field(
        "per figure (mse, preservation, frechet): whether its paired interval excludes 0",
        role="fact")


FIELDS = tuple(ResultRow.model_fields)
"""Every field name, in the order rows and tables show them."""


def role(name: str) -> str:
    """``param``, ``metric`` or ``fact``: where a field goes in MLflow."""
    return ResultRow.model_fields[name].json_schema_extra["role"]


PARAMS = tuple(name for name in FIELDS if role(name) == "param")
"""A row's MLflow params: what ran."""
METRICS = tuple(name for name in FIELDS if role(name) == "metric")
"""A row's MLflow metrics: what was measured."""
COLUMNS = tuple((name, *ResultRow.model_fields[name].json_schema_extra["column"])
                for name in FIELDS if ResultRow.model_fields[name].json_schema_extra["column"])
"""(field, column title, format[, scale]) of each column of the results table, in field order."""


def column_format(name: str) -> str:
    """The format a field's value is shown in (its column's)."""
    return next(spec[2] for spec in COLUMNS if spec[0] == name)


def metrics_of(row: dict[str, Any]) -> dict[str, float]:
    """A row's measured numbers for MLflow: each ``metric`` field and each 95% interval as
    ``<name>_lo`` and ``<name>_hi`` (``mse_ci95_lo``, ``mse_vs_reference_ci95_hi``); its
    verdicts are tags (:func:`tags_of`)."""
    found: dict[str, float] = {}
    for name in METRICS:
        value = row.get(name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            found[name] = value
        elif isinstance(value, list) and len(value) == 2 and None not in value:
            found[f"{name}_lo"], found[f"{name}_hi"] = value
    return found


def tags_of(row: dict[str, Any]) -> dict[str, str]:
    """A row's verdicts for MLflow, as tags: ``vs_reference`` (the system it is paired
    against), per paired figure ``<figure>_vs_reference_resolved`` (``true``: its interval
    excludes 0) and ``<figure>_vs_reference_verdict`` (``lower`` or ``higher`` than the
    reference, or ``not resolved``), and ``failure`` (why the system stopped)."""
    tags = {key: str(row[key]) for key in ("vs_reference", "failure") if row.get(key)}
    for figure, resolved in (row.get("vs_reference_resolved") or {}).items():
        tags[f"{figure}_vs_reference_resolved"] = str(bool(resolved)).lower()
        difference = row.get(f"{figure}_vs_reference")
        tags[f"{figure}_vs_reference_verdict"] = (
            "not resolved" if not resolved or difference is None
            else "lower" if difference < 0 else "higher")
    return tags


def make_row(**fields: Any) -> dict[str, Any]:
    """A results row as a plain dict in :data:`FIELDS` order, holding the fields given and the
    schema version; an unknown field or a wrong type is a ``pydantic.ValidationError``."""
    row = ResultRow(**fields)
    return {"schema_version": SCHEMA_VERSION, **row.model_dump(exclude_unset=True)}


def upgrade(row: dict[str, Any]) -> dict[str, Any]:
    """A row as of :data:`SCHEMA_VERSION`: a version-1 row's ``steps`` (its NFE) becomes
    ``nfe``, with ``steps`` unknown; rows before version 3 lose their Frechet and KID figures
    (another estimate under the same name) rather than mix with today's; a version-3 row keeps
    its figures, without ``system_config`` (a report reads it; a resume refuses it)."""
    version = row.get("schema_version", 1)
    if version == SCHEMA_VERSION:
        return row
    dropped = (*DISTANCES, "schema_version") if version < 3 else ("schema_version",)
    old = {k: v for k, v in row.items() if k not in dropped}
    if version == 1:
        old["nfe"] = old.pop("steps", None)
    return make_row(**old)


SETTINGS = ("compile", "noise_device", "tf32", "channels_last")
"""A Translator's settings, each a row field; a System's other settings go to
``other_settings``."""


def settings_fields(settings: dict[str, Any]) -> dict[str, Any]:
    """A System's ``settings`` as row fields."""
    fields = {k: v for k, v in settings.items() if k in SETTINGS}
    other = {k: v for k, v in settings.items() if k not in SETTINGS}
    return {**fields, **({"other_settings": other} if other else {})}
