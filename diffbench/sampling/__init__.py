"""Samplers: one core, every solver written once and valid on every noise path.

* :mod:`~diffbench.sampling.paths`: the VP schedule and the rectified-flow path, each giving a
  point's signal and noise scale (alpha, sigma) and its ODE coordinates;
* :mod:`~diffbench.sampling.prediction` and :mod:`~diffbench.sampling.denoiser`: any network
  (eps, v, flow velocity) read as (x0, eps) at a step;
* :mod:`~diffbench.sampling.base`: :class:`Sampler`, the grid, img2img's plan and start, the
  one loop (:meth:`Sampler.denoise`) and its callback;
* the solvers, each once: DDPM ancestral (:mod:`~diffbench.sampling.ddpm`), DDIM
  (:mod:`~diffbench.sampling.ddim`), DPM-Solver++(2M), Euler, Heun and UniPC
  (:mod:`~diffbench.sampling.solvers`); :mod:`~diffbench.sampling.flow` names three of them
  on the flow path (``flow-euler``, ``flow-heun``, ``flow-dpmsolver++``).

Numerics follow diffusers' schedulers (``clip_sample=True`` on the VP path,
``prediction_type`` from the checkpoint, ``set_alpha_to_one=True``, ``steps_offset=0``) so the
same model outputs and noise give the same numbers. Two documented departures, both invisible
with the default ``leading`` spacing of DDPM and DDIM:

* the next timestep is the next element of the call's sequence (diffusers' DDIM uses
  ``t - T // n``, which is wrong when the spacing does not step by ``T // n``);
* the final step adds no noise (diffusers adds noise whenever ``t > 0``; with ``leading``
  spacing the final step is ``t = 0``, and otherwise its variance is ~0 anyway).

A sampler is immutable: its prediction, path, step count and spacing are fixed at construction,
so there is no ``set_timesteps`` state to forget; what a multistep sampler remembers between
steps lives in a ``state`` dict local to one :meth:`Sampler.denoise` call. Each step gets a
:class:`Timestep` that carries its scales and the next step's.

Image-to-image starts (``start=``, :data:`STARTS`) at exactly the strength (``"exact"``, the
default: VP timestep ``int(strength * T) - 1``, 299 at 0.3 with T = 1000; flow sigma =
strength) with ``max(1, int(n * strength))`` steps spread below it by the sampler's spacing, or
as diffusers' img2img pipelines do (``"diffusers"``, for parity: the tail of the sampler's n
timesteps, so the noise level depends on n). :meth:`Sampler.plan` computes a call's timesteps,
NFE and start once per (strength, start); every reader takes them from there
(:mod:`diffbench.core.plan`).

Samplers register under a name with a label (``@register_sampler("ddim", "DDIM")``);
:data:`SAMPLERS` is the one list of choices the configs, the CLI and the system names derive
from. A user's sampler is one :class:`Sampler` subclass providing :meth:`Sampler.update` (one
step) or :meth:`Sampler.solve` (a step that keeps history or evaluates twice), registered or
named as ``"package.module:Name"``, or declared by an installed package in the entry-point
group ``diffbench.samplers`` (registered when this package is imported).
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
    ORIGINS,
    PLUGIN_SAMPLER,
    SAMPLERS,
    check_sampler_class,
    make_sampler,
    register_installed,
    register_sampler,
    resolve_sampler,
    sampler_class,
)
from diffbench.sampling.schedule import (  # they lived here
    SPACINGS,
    img2img_num_steps,
    make_timesteps,
)

# isort: split
# Importing registers; the order of these lines is the order of SAMPLERS: ddpm, ddim, the
# solvers (dpmsolver++, euler, heun, unipc), the flow names (flow-euler, flow-heun,
# flow-dpmsolver++), then the one-step networks' (consistency, meanflow).
from diffbench.sampling.ddpm import DDPMSampler

# isort: split
from diffbench.sampling.ddim import DDIMSampler

# isort: split
from diffbench.sampling import solvers as solvers

# isort: split
from diffbench.sampling import flow as flow

# isort: split
from diffbench.sampling import one_step as one_step

# isort: split
# Last, with every built-in in place (a plug-in's module imports diffbench.sampling): the
# samplers installed packages declare (entry-point group ``diffbench.samplers``).
register_installed()

__all__ = [
    "DEFAULT_STEPS", "ORIGINS", "PLUGIN_SAMPLER", "SAMPLERS", "SPACINGS", "STARTS", "VARIANCES",
    "DDIMSampler", "DDPMSampler", "Model", "Sampler", "Timestep", "check_sampler_class",
    "check_start", "check_strength", "exact_start", "flow", "img2img_num_steps", "make_sampler",
    "make_timesteps", "one_step", "randn_like",
    "register_installed", "register_sampler", "resolve_sampler", "sampler_class", "solvers",
]
