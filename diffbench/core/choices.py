"""The choices and bounds that the command line and the configs accept and that need no torch
(so ``diffbench <command> --help`` answers at once): devices, noise devices, compile modes,
seed bounds, the model kinds ``diffbench train`` trains and how many test digits a run may
score. Each is defined here once."""

DEVICES = ("auto", "cpu", "cuda")
"""What ``--device`` and the configs' ``device`` accept."""
NOISE_DEVICES = ("device", "cpu")
"""Where seeded noise is drawn: on the compute device, or on the CPU."""
COMPILE_MODES = ("compile", "cudagraphs")
"""torch.compile or CUDA graphs (:mod:`diffbench.systems.compiled`); None is eager."""
MAX_SEED = 2**32 - 1
"""Seeds lie in [0, MAX_SEED]."""
MAX_SCORED_DIGITS = 5_000
"""Test digits a run may score: the first 5,000; the last 5,000 are the held-out reference of
the Frechet distance and KID (:data:`diffbench.measure.scoring.REFERENCE_SLICE`), never scored."""
MODEL_KINDS = ("pixel", "latent", "vae", "classifier", "peer")
"""What ``diffbench train`` trains; :data:`diffbench.io.config.MODEL_CONFIGS` gives each its
model's config (its keys are these, in this order)."""
