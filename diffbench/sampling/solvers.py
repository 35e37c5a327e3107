"""The few-step solvers the field uses now: DPM-Solver++(2M), Euler, Heun and UniPC.

Each is written once on the path's scales (:mod:`diffbench.sampling.paths`): the state between
steps is ``x = alpha x0 + sigma eps``, the network is read as (x0, eps) by the denoiser (x0
clipped by the ``clip_sample`` policy), and after the last step comes (alpha, sigma) = (1, 0)
(diffusers' ``final_sigmas_type="zero"``). ``lambda = log(alpha / sigma)`` for the exponential
integrators (DPM-Solver++, UniPC), computed as ``0.5 log(ab / (1 - ab))`` from the step's
alpha_bar; the path's ODE coordinates ``y = x / c`` over ``tau`` for Euler and Heun (Karras et
al.'s ``x / alpha`` over ``sigma / alpha`` on the VP path, diffusers' "sigma space"; ``x`` over
``s`` on the flow path, as ``FlowMatchEulerDiscreteScheduler``).

Numerics follow diffusers 0.42 (``DPMSolverMultistepScheduler``, ``EulerDiscreteScheduler``,
``HeunDiscreteScheduler``, ``UniPCMultistepScheduler`` with the settings each class names, and
on flow sigmas ``FlowMatchEulerDiscreteScheduler``, ``FlowMatchHeunDiscreteScheduler`` and
``DPMSolverMultistepScheduler(use_flow_sigmas=True)``; ``tests/test_parity_solvers.py`` and
``tests/test_parity_flow.py`` check whole trajectories and img2img loops). Departures:

* The default VP spacing is ``trailing``, which all four diffusers schedulers define as
  :func:`~diffbench.sampling.schedule.make_timesteps` does (and Lin et al. 2023 recommend for few
  steps). diffusers' DPM-Solver and UniPC define ``leading`` as ``arange(n + 1) * (T // (n +
  1))`` less its 0, unlike its own DDIM, Euler and Heun (``arange(n) * (T // n)``); here
  ``leading`` means the latter for every sampler, so with ``leading`` these two differ from
  diffusers by design. Nor does this module give ``n + 1`` timesteps for the ``n`` at which
  diffusers' float-step ``np.arange`` does (e.g. 61 trailing).
* Euler and Heun from pure noise: diffusers scales the initial noise by ``init_noise_sigma``,
  which for ``trailing`` and ``linspace`` spacing is ``s_max``, not the ``sqrt(s_max^2 + 1)``
  that turns a VP x_T into its sigma-space state (2e-5 relative at t = 999 of the linear
  schedule); :meth:`~diffbench.sampling.Sampler.sample` starts from the given x_T exactly.
* Arithmetic runs in the data's dtype with float64 coefficients (diffusers upcasts samples to
  float32 and computes its coefficients in float32).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffbench.sampling.base import Sampler, Timestep
from diffbench.sampling.denoiser import Denoiser
from diffbench.sampling.prediction import PREDICTIONS
from diffbench.sampling.registry import register_sampler

ALL_PREDICTIONS = PREDICTIONS


def half_log_snr(alpha_bar: float) -> float:
    """``lambda = log(alpha / sigma)``, half the log signal-to-noise ratio."""
    return 0.5 * math.log(alpha_bar / (1 - alpha_bar))


def exponential_step(x: Tensor, t: Timestep, d: Tensor, h: float) -> Tensor:
    """DPM-Solver++'s step from ``t`` to the next over ``h`` in lambda on the data prediction
    ``d`` (Lu et al. 2022, arXiv 2211.01095, eq. 8): ``sigma_next / sigma * x - alpha_next *
    expm1(-h) * d``; DDIM's step when ``d`` is x0."""
    return (t.sigma_next / t.sigma) * x - t.alpha_next * math.expm1(-h) * d


def multistep_data(x0: Tensor, x0_prev: Tensor, r: float) -> Tensor:
    """DPM-Solver++(2M)'s ``D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev``, ``r = h_prev / h``
    (Lu et al. 2022, Algorithm 2)."""
    return (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev


@register_sampler("dpmsolver++", "DPM++2M")
class DPMSolverPlusPlusSampler(Sampler):
    """DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models" (arXiv 2211.01095), Algorithm 2, the multistep
    second-order exponential integrator on the data prediction x0 (:func:`exponential_step`
    with :func:`multistep_data`).

    The first step of a call, with no history, is first order (``D = x0``, DDIM's step), and
    so is the last, which lands on x0 itself. The history (the last x0s and lambdas) lives in
    the call's ``state``, as ``old_denoised`` in k-diffusion's ``sample_dpmpp_2m``; a
    corrector (UniPC's) revises the state first, through :meth:`correct`. diffusers:
    ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
    solver_type="midpoint", lower_order_final=True, thresholding=False)``; on flow sigmas
    with ``use_flow_sigmas=True, prediction_type="flow_prediction"`` (its grid: ``trailing``).
    """

    predictions = ALL_PREDICTIONS
    default_spacing = "trailing"
    flow_spacing = "trailing"

    def solve(self, denoise: Denoiser, t: Timestep, x: Tensor, state: dict,
              generator: torch.Generator | None) -> Tensor:
        x0, _ = denoise(x, t)
        if t.last:  # first order to sigma = 0: x0 itself
            return x0
        lam = half_log_snr(t.alpha_bar)
        history = "x0" in state
        if history:
            x = self.correct(state, x0, t, lam, x)
        h = half_log_snr(t.alpha_bar_next) - lam
        d = multistep_data(x0, state["x0"][0], (lam - state["lam"][0]) / h) if history else x0
        state.update(x=x, t=t, order=2 if history else 1, x0=[x0, *state.get("x0", [])][:2],
                     lam=[lam, *state.get("lam", [])][:2])
        return exponential_step(x, t, d, h)

    def correct(self, state: dict, x0: Tensor, t: Timestep, lam: float, x: Tensor) -> Tensor:
        """The state at ``t`` before the step from it: DPM-Solver++ keeps ``x``."""
        return x


def ode_coordinates(sampler: Sampler, t: Timestep) -> tuple[float, float, float, float]:
    """(c, tau, c_next, tau_next): the path's ODE coordinates ``y = x / c`` over ``tau`` at
    ``t`` and the next step, in which ``dy/dtau = (y - x0) / tau``."""
    return (*sampler.path.ode(t.alpha, t.sigma), *sampler.path.ode(t.alpha_next, t.sigma_next))


@register_sampler("euler", "Euler")
class EulerSampler(Sampler):
    """Euler's method on the probability-flow ODE: Karras et al. 2022, "Elucidating the Design
    Space of Diffusion-Based Generative Models" (arXiv 2206.00364), Algorithm 2 with
    ``S_churn = 0`` and without its second-order correction (lines 9-11), deterministic:
    ``y_next = y + (tau_next - tau) (y - x0) / tau``. With the model's own x0 (no clipping) this
    is DDIM's eta = 0 step. diffusers: ``EulerDiscreteScheduler(timestep_spacing="trailing" or
    "leading", interpolation_type="linear")`` on integer timesteps; on flow sigmas
    ``FlowMatchEulerDiscreteScheduler(shift=k)`` (Liu et al. 2022; Esser et al. 2024).
    """

    predictions = ALL_PREDICTIONS
    default_spacing = "trailing"

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """``x_next = c_next (tau_next / tau) x / c + c_next (1 - tau_next / tau) x0``."""
        c, tau, c_next, tau_next = ode_coordinates(self, t)
        ratio = tau_next / tau
        return (c_next / c) * ratio * x_t + c_next * (1 - ratio) * x0, 0.0


@register_sampler("heun", "Heun")
class HeunSampler(Sampler):
    """Heun's second-order method: Karras et al. 2022 (arXiv 2206.00364), Algorithm 1 in the
    path's ODE coordinates (Algorithm 2 with ``S_churn = 0``).

    An Euler step to ``tau_next``, the model again there, and the step redone with the mean of
    the two slopes; the last step, to tau = 0, stays Euler's. So ``2k - 1`` network evaluations
    for k steps (:meth:`nfe_of`). diffusers: ``HeunDiscreteScheduler(timestep_spacing=
    "trailing" or "leading")``, whose ``clip_sample=True`` clips both x0 predictions as
    ``clip_sample`` does here; on flow sigmas ``FlowMatchHeunDiscreteScheduler(shift=k)``.
    """

    predictions = ALL_PREDICTIONS
    default_spacing = "trailing"

    def nfe_of(self, steps: int) -> int:
        return 2 * steps - 1

    def solve(self, denoise: Denoiser, t: Timestep, x: Tensor, state: dict,
              generator: torch.Generator | None) -> Tensor:
        x0, _ = denoise(x, t)
        if t.last:  # Euler's step to tau = 0 lands on x0
            return x0
        c, tau, c_next, tau_next = ode_coordinates(self, t)
        y = x / c
        d = (y - x0) / tau
        y_euler = y + (tau_next - tau) * d
        x0_next, _ = denoise(c_next * y_euler, t.after)
        d_next = (y_euler - x0_next) / tau_next
        return c_next * (y + (tau_next - tau) * (d + d_next) / 2)


def _bh2(h: float) -> tuple[float, float, float, float]:
    """UniPC's coefficients of a step ``h`` in lambda on the data prediction (``hh = -h``) with
    ``B(h) = expm1(hh)``: ``(h phi_1, B(h), b_1, b_2)``, b_k = ``(k-1)! h phi_{k+1} / B(h)``."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_2 = h_phi_1 / hh - 1
    h_phi_3 = h_phi_2 / hh - 0.5
    return h_phi_1, h_phi_1, h_phi_2 / h_phi_1, 2 * h_phi_3 / h_phi_1


@register_sampler("unipc", "UniPC")
class UniPCSampler(DPMSolverPlusPlusSampler):
    """UniPC-2 with ``B(h) = e^h - 1`` ("bh2"): Zhao et al. 2023, "UniPC: A Unified
    Predictor-Corrector Framework for Fast Sampling of Diffusion Models" (arXiv 2302.04867),
    the multistep UniP-2 predictor and UniC corrector on the data prediction x0.

    Each step first corrects x with the x0 just predicted there (UniC, of the order of the
    predictor that made x; no extra network call), then predicts x_next from the corrected x,
    its x0 and the previous x0: UniP-2 is DPM-Solver++(2M)'s step (:func:`exponential_step`
    with :func:`multistep_data`), first order on a call's first step and on its last, which
    lands on x0. History in the call's ``state``. diffusers: ``UniPCMultistepScheduler(
    solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
    disable_corrector=[], thresholding=False)``.
    """

    def correct(self, state: dict, x0: Tensor, t: Timestep, lam: float, x: Tensor) -> Tensor:
        """UniC: redo the last step from its start ``state["x"]`` with the x0 now known at its
        end, at the order of the predictor that took it."""
        m0, lam0 = state["x0"][0], state["lam"][0]
        h = lam - lam0
        _, b_h, b1, b2 = _bh2(h)
        x = exponential_step(state["x"], state["t"], m0, h)
        if state["order"] == 1:
            return x - (t.alpha * b_h * 0.5) * (x0 - m0)
        r = (state["lam"][1] - lam0) / h
        rho0 = (b1 - b2) / (1 - r)  # solves [[1, 1], [r, 1]] @ rho = [b1, b2]
        rho1 = b1 - rho0
        correction = (rho0 / r) * (state["x0"][1] - m0) + rho1 * (x0 - m0)
        return x - t.alpha * b_h * correction
