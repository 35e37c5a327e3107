"""The few-step solvers the field uses now: DPM-Solver++(2M), Euler, Heun and UniPC.

Each is a :class:`~diffbench.sampling.Sampler` (registered as ``dpmsolver++``, ``euler``,
``heun``, ``unipc``) on the same ``model(x_t, t) -> eps`` with integer timesteps as DDPM and
DDIM: the state between steps is the VP sample ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps``, the
x0 prediction is clipped by the base class's ``clip_sample`` policy, image-to-image starts as
the base class says (``start="diffusers"`` or ``"exact"``), and after the last timestep comes
alpha_bar = 1 (sigma = 0: diffusers' ``final_sigmas_type="zero"``). Notation, from alpha_bar
``ab``: ``alpha = sqrt(ab)``, ``sigma = sqrt(1 - ab)`` and ``lambda = log(alpha / sigma)`` for the
exponential integrators (DPM-Solver++, UniPC); Karras et al.'s ``s = sigma / alpha`` and
``x = x_t / alpha`` for Euler and Heun (diffusers' "sigma space", whose ``scale_model_input``,
``c_in = 1 / sqrt(s^2 + 1)``, gives the model x_t back, and whose ``add_noise``, ``x0 + s *
noise``, is VP's ``add_noise`` divided by alpha).

Numerics follow diffusers 0.42 (``DPMSolverMultistepScheduler``, ``EulerDiscreteScheduler``,
``HeunDiscreteScheduler``, ``UniPCMultistepScheduler`` with the settings each class names;
``tests/test_parity_solvers.py`` checks whole trajectories and img2img loops). Departures:

* The default spacing is ``trailing``, which all four diffusers schedulers define as
  :func:`~diffbench.schedule.make_timesteps` does (and Lin et al. 2023 recommend for few
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
from collections.abc import Callable

import torch
from torch import Tensor

from diffbench.sampling.base import Sampler, Timestep
from diffbench.sampling.registry import register_sampler


def _lambda(alpha_bar: float) -> float:
    """``log(alpha / sigma)``, half the log signal-to-noise ratio."""
    return 0.5 * math.log(alpha_bar / (1 - alpha_bar))


def _sigma(alpha_bar: float) -> float:
    """Karras et al.'s noise level ``s = sigma / alpha`` of the VP schedule (0 at ab = 1)."""
    return math.sqrt((1 - alpha_bar) / alpha_bar)


@register_sampler("dpmsolver++", "DPM++2M")
class DPMSolverPlusPlusSampler(Sampler):
    """DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models" (arXiv 2211.01095), Algorithm 2, the multistep
    second-order exponential integrator on the data prediction x0.

    With ``h = lambda_next - lambda_t`` and ``r = h_prev / h``, a step is ``x_next =
    sigma_next / sigma_t * x_t - alpha_next * expm1(-h) * D`` with ``D = (1 + 1/(2r)) x0 -
    1/(2r) x0_prev``. The first step of a call, with no history, is first order (``D = x0``,
    DDIM's step), and so is the last, which lands on alpha_bar = 1 at x0 itself. The history
    (x0_prev, h_prev) lives in the call's ``state``, as ``old_denoised`` in k-diffusion's
    ``sample_dpmpp_2m``. diffusers: ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
    solver_order=2, solver_type="midpoint", lower_order_final=True, thresholding=False)``.
    """

    default_spacing = "trailing"

    def advance(
        self, eps: Tensor, t: Timestep, x_t: Tensor, state: dict, generator: torch.Generator | None
    ) -> Tensor:
        a_t, a_next = self.alpha_bars(t)
        x0 = self.predict_x0(eps, x_t, a_t)
        if a_next == 1.0:
            return x0
        h = _lambda(a_next) - _lambda(a_t)
        d = x0
        if "x0" in state:
            r = state["h"] / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state["x0"]
        state.update(x0=x0, h=h)
        return math.sqrt((1 - a_next) / (1 - a_t)) * x_t - math.sqrt(a_next) * math.expm1(-h) * d


@register_sampler("euler", "Euler")
class EulerSampler(Sampler):
    """Euler's method on the probability-flow ODE: Karras et al. 2022, "Elucidating the Design
    Space of Diffusion-Based Generative Models" (arXiv 2206.00364), Algorithm 2 with
    ``S_churn = 0`` and without its second-order correction (lines 9-11), deterministic.

    In ``s = sqrt((1 - ab) / ab)`` and ``x = x_t / sqrt(ab)``: ``d = (x - x0) / s``, ``x_next
    = x + (s_next - s) d``. With the model's own x0 (no clipping) this is DDIM's eta = 0 step.
    diffusers: ``EulerDiscreteScheduler(timestep_spacing="trailing" or "leading",
    interpolation_type="linear")``, on integer timesteps.
    """

    default_spacing = "trailing"

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """``x_next = (s_next / s) x + (1 - s_next / s) x0``, times ``sqrt(ab_next)``."""
        a_t, a_next = self.alpha_bars(t)
        ratio = _sigma(a_next) / _sigma(a_t)
        return math.sqrt(a_next / a_t) * ratio * x_t + math.sqrt(a_next) * (1 - ratio) * x0, 0.0


@register_sampler("heun", "Heun")
class HeunSampler(Sampler):
    """Heun's second-order method: Karras et al. 2022 (arXiv 2206.00364), Algorithm 1 with
    ``sigma(t) = t``, ``s(t) = 1`` on ``x = x_t / sqrt(ab)`` (Algorithm 2 with ``S_churn = 0``).

    An Euler step to ``s_next``, the model again there, and the step redone with the mean of
    the two slopes; the last step, to s = 0, stays Euler's. So ``2k - 1`` network evaluations
    for k steps (:meth:`nfe_of`). diffusers: ``HeunDiscreteScheduler(timestep_spacing="trailing"
    or "leading")``, whose ``clip_sample=True`` clips both x0 predictions as ``clip_sample``
    does here.
    """

    default_spacing = "trailing"

    def nfe_of(self, steps: int) -> int:
        return 2 * steps - 1

    def advance_with(
        self,
        predict: Callable[[Tensor, int], Tensor],
        t: Timestep,
        x: Tensor,
        state: dict,
        generator: torch.Generator | None,
    ) -> Tensor:
        x0 = self.predict_x0(predict(x, t), x, t.alpha_bar)
        if t.last:  # Euler's step to s = 0 lands on x0
            return x0
        a_next = t.alpha_bar_next
        s, s_next = _sigma(t.alpha_bar), _sigma(a_next)
        x_s = x / math.sqrt(t.alpha_bar)
        d = (x_s - x0) / s
        x_euler = x_s + (s_next - s) * d
        x_t_euler = math.sqrt(a_next) * x_euler
        x0_next = self.predict_x0(predict(x_t_euler, t.next), x_t_euler, a_next)
        d_next = (x_euler - x0_next) / s_next
        return math.sqrt(a_next) * (x_s + (s_next - s) * (d + d_next) / 2)


def _bh2(h: float) -> tuple[float, float, float, float]:
    """UniPC's coefficients of a step ``h`` in lambda on the data prediction (``hh = -h``) with
    ``B(h) = expm1(hh)``: ``(h phi_1, B(h), b_1, b_2)``, b_k = ``(k-1)! h phi_{k+1} / B(h)``."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_2 = h_phi_1 / hh - 1
    h_phi_3 = h_phi_2 / hh - 0.5
    return h_phi_1, h_phi_1, h_phi_2 / h_phi_1, 2 * h_phi_3 / h_phi_1


@register_sampler("unipc", "UniPC")
class UniPCSampler(Sampler):
    """UniPC-2 with ``B(h) = e^h - 1`` ("bh2"): Zhao et al. 2023, "UniPC: A Unified
    Predictor-Corrector Framework for Fast Sampling of Diffusion Models" (arXiv 2302.04867),
    the multistep UniP-2 predictor and UniC corrector on the data prediction x0.

    Each step first corrects x_t with the x0 just predicted there (UniC, of the order of the
    predictor that made x_t; no extra network call), then predicts x_next from the corrected
    x_t, its x0 and the previous x0 (UniP-2; first order on a call's first step, when there is
    no history, and on its last, which lands on alpha_bar = 1 at x0). UniP-2 is DPM-Solver++(2M)'s
    step; the corrector is what UniPC adds. History in the call's ``state``. diffusers:
    ``UniPCMultistepScheduler(solver_order=2, solver_type="bh2", predict_x0=True,
    lower_order_final=True, disable_corrector=[], thresholding=False)``.
    """

    default_spacing = "trailing"

    def advance(
        self, eps: Tensor, t: Timestep, x_t: Tensor, state: dict, generator: torch.Generator | None
    ) -> Tensor:
        a_t, a_next = self.alpha_bars(t)
        x0 = self.predict_x0(eps, x_t, a_t)
        if a_next == 1.0:  # first order to sigma = 0: x0, whatever the corrector made of x_t
            return x0
        lam = _lambda(a_t)
        if "x0" in state:
            x_t = self._correct(state, x0, a_t, lam)
        order = 2 if "x0" in state else 1
        h = _lambda(a_next) - lam
        h_phi_1, b_h, _, _ = _bh2(h)
        x_next = math.sqrt((1 - a_next) / (1 - a_t)) * x_t - math.sqrt(a_next) * h_phi_1 * x0
        if order == 2:
            r = (state["lam"][0] - lam) / h
            x_next = x_next - (math.sqrt(a_next) * b_h * 0.5 / r) * (state["x0"][0] - x0)
        state.update(x=x_t, a=a_t, order=order, x0=[x0, *state.get("x0", [])][:2],
                     lam=[lam, *state.get("lam", [])][:2])
        return x_next

    @staticmethod
    def _correct(state: dict, x0: Tensor, a_t: float, lam: float) -> Tensor:
        """UniC: redo the last step from its start ``state["x"]`` with the x0 now known at its
        end, at the order of the predictor that took it."""
        m0, lam0, a0 = state["x0"][0], state["lam"][0], state["a"]
        h = lam - lam0
        h_phi_1, b_h, b1, b2 = _bh2(h)
        x = math.sqrt((1 - a_t) / (1 - a0)) * state["x"] - math.sqrt(a_t) * h_phi_1 * m0
        if state["order"] == 1:
            return x - (math.sqrt(a_t) * b_h * 0.5) * (x0 - m0)
        r = (state["lam"][1] - lam0) / h
        rho0 = (b1 - b2) / (1 - r)  # solves [[1, 1], [r, 1]] @ rho = [b1, b2]
        rho1 = b1 - rho0
        correction = (rho0 / r) * (state["x0"][1] - m0) + rho1 * (x0 - m0)
        return x - math.sqrt(a_t) * b_h * correction
