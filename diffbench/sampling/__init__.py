"""Reverse-process samplers: DDPM ancestral sampling and DDIM, plus SDEdit image-to-image.

Numerics follow diffusers' ``DDPMScheduler`` and ``DDIMScheduler`` (defaults
``clip_sample=True``, ``prediction_type="epsilon"``, ``set_alpha_to_one=True``,
``steps_offset=0``) so the same model outputs and noise give the same numbers. Two documented
departures, both invisible with the default ``leading`` spacing:

* the previous timestep is the next element of :attr:`timesteps` (diffusers uses
  ``t - T // n``, which is wrong when the spacing does not step by ``T // n``, as with
  ``linspace`` and ``trailing`` at some step counts);
* the final step adds no noise (diffusers adds noise whenever ``t > 0``; with ``leading``
  spacing the final step is ``t = 0``, and otherwise its variance is ~0 anyway).

Unlike diffusers' schedulers, a sampler is immutable: its step count and spacing are fixed at
construction, so there is no ``set_timesteps`` state to forget; what a multistep sampler
remembers between steps lives in a ``state`` dict local to one :meth:`Sampler.denoise` call.
:meth:`Sampler.denoise` runs any strictly decreasing timestep sequence: each step gets a
:class:`Timestep`, an ``int`` that also carries its alpha_bar and the next one's, so the
coefficients of a step come from the call's own sequence, not from a fixed table.

Image-to-image starts (``start=``, :data:`STARTS`) at exactly ``t_start = int(strength * T) - 1``
for every sampler (``"exact"``, the default: 299 at 0.3 with T = 1000), with
``max(1, int(n * strength))`` steps spread over [0, t_start] by the sampler's spacing
(:func:`diffbench.schedule.make_start_timesteps`), or as diffusers' img2img pipelines do
(``"diffusers"``, for parity: the last ``int(n * strength)`` of the sampler's n timesteps, so the
noise level depends on n: DDIM-10 at strength 0.3 starts at t = 200, DDIM-50 at 280, DDPM-1000
at 299). :meth:`Sampler.plan` computes a call's timesteps, NFE and start once per (strength,
start); every reader takes them from there (:mod:`diffbench.plan`).

Samplers register under a name with a label (``@register_sampler("ddim", "DDIM")``);
:data:`SAMPLERS` is the one list of choices the configs, the CLI and the system names derive
from. A user's sampler is one :class:`Sampler` subclass providing :meth:`Sampler.update` (one
step) or :meth:`Sampler.advance` (a step that keeps history), registered or named as
``"package.module:Name"``. The few-step solvers (DPM-Solver++, Euler, Heun, UniPC) live in
:mod:`diffbench.sampling.solvers`, registered when this package is imported.

Files: :mod:`~diffbench.sampling.base` (the skeleton), :mod:`~diffbench.sampling.registry`,
:mod:`~diffbench.sampling.ddpm`, :mod:`~diffbench.sampling.ddim`,
:mod:`~diffbench.sampling.solvers`.
"""

from diffbench.sampling.base import (
    DEFAULT_STEPS,
    STARTS,
    VARIANCES,
    Model,
    Sampler,
    Timestep,
    check_start,
    check_strength,
    exact_start,
    randn_like,
)
from diffbench.sampling.registry import (
    PLUGIN_SAMPLER,
    SAMPLERS,
    check_sampler_class,
    make_sampler,
    register_sampler,
    resolve_sampler,
    sampler_class,
)
from diffbench.schedule import SPACINGS, img2img_num_steps, make_timesteps  # they lived here

# isort: split
# Importing registers; the order of these lines is the order of SAMPLERS: ddpm, ddim, the
# solvers (dpmsolver++, euler, heun, unipc), then the flow samplers (flow-euler, flow-heun,
# flow-dpmsolver++).
from diffbench.sampling.ddpm import DDPMSampler

# isort: split
from diffbench.sampling.ddim import DDIMSampler

# isort: split
from diffbench.sampling import solvers as solvers

# isort: split
from diffbench.sampling import flow as flow

__all__ = [
    "DEFAULT_STEPS", "PLUGIN_SAMPLER", "SAMPLERS", "SPACINGS", "STARTS", "VARIANCES",
    "DDIMSampler", "DDPMSampler", "Model", "Sampler", "Timestep", "check_sampler_class",
    "check_start", "check_strength", "exact_start", "flow", "img2img_num_steps", "make_sampler",
    "make_timesteps", "randn_like",
    "register_sampler", "resolve_sampler", "sampler_class", "solvers",
]
