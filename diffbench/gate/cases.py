"""The benchmark cases: one definition shared by ``benches/`` and ``diffbench ab``.

A :class:`Case` names one timed call on the public API only (``Translator.from_checkpoints``
with a sampler name, ``load_model`` for the VAE, ``prepare_run`` and ``train_step`` for one
training step), so that ``diffbench ab`` can build the same case against an older version of
the package: this file is loaded by path into a worker that imports *that* version's
``diffbench``, which is why every import of ``diffbench`` below sits inside a function. A case
that an older version cannot build is reported as not comparable.

Case names are stable identifiers, e.g. ``img2img-pixel-ddim-50-s0.3-b1`` (space, sampler,
steps, strength, batch), ``vae-encode-b16``, ``train-pixel-b64``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NUM_TIMESTEPS = 1000  # the shipped checkpoints' schedule: what an every-timestep sampler runs
DEFAULT_STEPS = 50  # a few-step sampler's default (diffbench.sampling.DEFAULT_STEPS)
FEW_STEPS = {"pixel": (10, 20, DEFAULT_STEPS, 100), "latent": (DEFAULT_STEPS,)}  # DDIM's
SOLVER_STEPS = {"dpmsolver++": 10, "unipc": 10, "euler": 10, "heun": 7,
                "flow-euler": 10, "flow-heun": 7, "flow-dpmsolver++": 10}
"""The few-step solvers' step counts: 3 network evaluations at strength 0.3 (5 at 0.5), where
the NFE sweep finds every sampler at DDIM-50's fidelity; the flow samplers (on the flow
networks) alike. A sampler registered by a user runs at DDIM's step counts."""
JUMP_STEPS = {"consistency": (1, 2), "meanflow": (1, 2)}
"""The one-step networks' samplers: one and two jumps (1 and 2 network evaluations from any
start)."""
ANCESTRAL_STEPS = (DEFAULT_STEPS, NUM_TIMESTEPS)
"""An every-timestep sampler (DDPM) at 50 leading-spaced steps (diffusers' DDPMScheduler with
``num_inference_steps=50``) and at every timestep."""
STRENGTHS = (0.3, 0.5)
BATCHES = (1, 16)  # latency, throughput
TRAIN_KINDS = ("pixel", "vae", "latent", "classifier")
TRAIN_VARIANTS = {"pixel-flow": ("pixel", ["prediction=flow"]),
                  "latent-flow": ("latent", ["prediction=flow"])}
"""Training steps of other objectives on a kind's network: name -> (kind, config overrides)."""
TRAIN_BATCH = 64
VAE_PARTS = ("encode", "decode")
VAE_BATCHES = (1, 16)
DIGITS = 64  # the fixed batch of real test digits every case draws its first 1, 16 or 64 from


@dataclass(frozen=True)
class Case:
    """One timed call. ``kind`` is ``img2img``, ``vae`` or ``train``; ``params`` what the call
    needs (for img2img a compare-config system mapping plus strength and batch)."""

    name: str
    kind: str
    params: dict[str, Any] = field(hash=False, compare=False)
    quick: bool = False


@dataclass
class Call:
    """``run(**setup())``: ``setup`` (untimed) makes a fresh generator seeded 0 and anything
    else a call must not share with the previous one; ``run`` is the timed call."""

    run: Callable[..., Any]
    setup: Callable[[], dict[str, Any]]


def img2img_name(system: dict[str, Any], strength: float, batch: int) -> str:
    label = system.get("name") or f"{system['space']}-{system['sampler']}-{system['steps']}"
    return f"img2img-{label}-s{strength}-b{batch}"


QUICK = frozenset({
    "img2img-pixel-ddim-50-s0.3-b1",  # latency: the reference system, one digit
    "img2img-pixel-ddim-10-s0.3-b16",  # throughput: 16 digits, 3 evaluations
    "img2img-latent-ddim-50-s0.3-b16",  # the latent paradigm, VAE encode and decode included
    "img2img-pixel-ddpm-50-s0.3-b1",  # ancestral sampling (noise drawn every step)
    "img2img-pixel-dpmsolver++-10-s0.3-b16",  # a few-step multistep solver
    "img2img-pixel-consistency-1-s0.5-b16",  # a one-step network: one jump
    "img2img-latent-meanflow-2-s0.5-b16",  # MeanFlow's two-time network, two jumps, in latents
    "vae-encode-b16",
    "vae-decode-b16",
    "train-pixel-b64",  # one training step: forward, backward, AdamW, EMA
})
"""The quick set: what CI gates on (``diffbench ab --cases quick``) and ``-m quick`` benches."""


def img2img_systems(samplers: dict[str, Any], spaces: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each space with each registered sampler at its bench step counts, as compare-config
    mappings: ``samplers`` maps names to classes (their ``default_steps`` None means every
    timestep)."""
    found = []
    for space in spaces:
        for name, cls in samplers.items():
            if cls.default_steps is None:
                counts = ANCESTRAL_STEPS
            elif name in JUMP_STEPS:
                counts = JUMP_STEPS[name]
            else:
                counts = (SOLVER_STEPS[name],) if name in SOLVER_STEPS else FEW_STEPS[space]
            # A flow sampler runs on its space's flow network (``predictions`` is absent from
            # versions of diffbench without flow networks).
            prediction = getattr(cls, "predictions", ("eps",))[0]
            network = {} if prediction == "eps" else {"prediction": prediction}
            found += [{"space": space, "sampler": name, "steps": steps, **network}
                      for steps in counts]
    return found


def img2img_cases(systems: list[dict[str, Any]]) -> list[Case]:
    """Every system at every bench strength and batch."""
    return [
        Case(name, "img2img", {"system": system, "strength": strength, "batch": batch},
             quick=name in QUICK)
        for system in systems
        for strength in STRENGTHS
        for batch in BATCHES
        for name in [img2img_name(system, strength, batch)]
    ]


def vae_cases() -> list[Case]:
    return [Case(f"vae-{part}-b{batch}", "vae", {"part": part, "batch": batch},
                 quick=f"vae-{part}-b{batch}" in QUICK)
            for part in VAE_PARTS for batch in VAE_BATCHES]


def train_cases() -> list[Case]:
    variants = {kind: (kind, []) for kind in TRAIN_KINDS} | TRAIN_VARIANTS
    return [Case(f"train-{name}-b{TRAIN_BATCH}", "train",
                 {"kind": kind, "batch": TRAIN_BATCH, "overrides": overrides},
                 quick=f"train-{name}-b{TRAIN_BATCH}" in QUICK)
            for name, (kind, overrides) in variants.items()]


def public(name: str, *modules: str):
    """``name`` from the first of ``modules`` that has it: this version's module, then where a
    version of diffbench before the package's folders kept it (a base worker imports either)."""
    import importlib

    failure: Exception | None = None
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            failure = error
    raise ImportError(f"none of {', '.join(modules)} has {name}") from failure


def _spaces():
    return public("SPACES", "diffbench.core.system", "diffbench.system")


def _translator():
    return (public("SystemConfig", "diffbench.io.config", "diffbench.config"),
            public("Translator", "diffbench.systems.translate", "diffbench.translate"))


def _load_model():
    return public("load_model", "diffbench.io.checkpoints", "diffbench.checkpoints")


def all_cases() -> dict[str, Case]:
    """Every case by name, built from the registered samplers and spaces of the ``diffbench``
    this file runs against (the head's, or the base's inside a base worker)."""
    from diffbench.sampling import SAMPLERS

    spaces = _spaces()
    cases = img2img_cases(img2img_systems(SAMPLERS, tuple(spaces))) + vae_cases() + train_cases()
    return {case.name: case for case in cases}


def build(case: Case, checkpoints: Path, digits, device: str = "cpu") -> Call:
    """The timed call of ``case`` on the first digits of ``digits`` ([N, 1, 28, 28] in
    [-1, 1]), with the checkpoints in ``checkpoints``."""
    builders = {"img2img": _img2img, "vae": _vae, "train": _train}
    return builders[case.kind](case.params, Path(checkpoints), digits, device)


def build_outputs(case: Case, checkpoints: Path, device: str = "cpu"):
    """What ``diffbench ab`` scores for ``case``'s fidelity: a function of (images, seed) to the
    case's outputs for those images, the generator seeded ``seed``; None for a case with no
    image output (a training step)."""
    if case.kind == "img2img":
        SystemConfig, Translator = _translator()
        system = Translator.from_config(SystemConfig(**case.params["system"]), checkpoints,
                                        device)
        strength = case.params["strength"]
        return lambda images, seed: system(images.to(device), strength,
                                           generator=system.generator(seed))
    if case.kind == "vae":  # encode and decode alike: the round trip's reconstruction
        import torch

        load_model = _load_model()
        vae, _ = load_model(Path(checkpoints) / "vae.safetensors", device)

        def round_trip(images, seed):
            with torch.inference_mode():
                return vae.decode(vae.encode(images.to(device))[0])

        return round_trip
    return None


def _img2img(params, checkpoints, digits, device) -> Call:
    SystemConfig, Translator = _translator()
    system = Translator.from_config(SystemConfig(**params["system"]), checkpoints, device)
    images = digits[: params["batch"]].to(device)
    strength = params["strength"]
    return Call(lambda generator: system(images, strength, generator=generator),
                lambda: {"generator": system.generator(0)})


def _vae(params, checkpoints, digits, device) -> Call:
    import torch

    load_model = _load_model()
    vae, _ = load_model(checkpoints / "vae.safetensors", device)
    images = digits[: params["batch"]].to(device)
    with torch.inference_mode():
        latents = vae.encode(images)[0]
    fn, inputs = (vae.encode, images) if params["part"] == "encode" else (vae.decode, latents)

    def run():
        with torch.inference_mode():
            return fn(inputs)

    return Call(run, dict)


def _train(params, checkpoints, digits, device) -> Call:
    import torch

    load_train_config = public("load_train_config", "diffbench.io.config", "diffbench.config")
    from diffbench.train import Distributed, prepare_run, train_step

    batch = params["batch"]
    overrides = [f"train_images={batch}", f"batch_size={batch}", f"device={device}",
                 f"vae_checkpoint={checkpoints / 'vae.safetensors'}", *params.get("overrides", [])]
    config = load_train_config(params["kind"], overrides=overrides)
    run = prepare_run(config, torch.device(device), Distributed(), resume=False, command="bench")
    index = torch.arange(batch, device=device)
    return Call(lambda generator: train_step(run, index, generator),
                lambda: {"generator": torch.Generator(device).manual_seed(0)})
