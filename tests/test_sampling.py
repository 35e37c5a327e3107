"""DDPM and DDIM samplers: timesteps, the reverse step, determinism and image-to-image."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from diffbench import DDIMSampler, DDPMSampler, NoiseSchedule, make_timesteps
from diffbench.sampling import SPACINGS, img2img_num_steps

LINEAR = NoiseSchedule.linear()
SCHEDULES = {
    "linear": LINEAR,
    "cosine": NoiseSchedule.cosine(),
    "scaled_linear": NoiseSchedule.scaled_linear(),
}


def digits(batch: int = 3, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Images in [-1, 1] shaped like MNIST digits (random content; the math is content-free)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 28, 28, generator=gen, dtype=dtype) * 2 - 1


class OracleModel:
    """A model that knows x0, so it returns the exact noise in x_t: eps = (x_t - sqrt(ab) x0) /
    sqrt(1 - ab). With it, DDIM (eta=0) must retrace the forward trajectory back to x0."""

    def __init__(self, schedule: NoiseSchedule, x0: torch.Tensor) -> None:
        self.schedule, self.x0, self.calls = schedule, x0, []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        self.calls.append(int(t[0]))
        return self.schedule.eps_from_x0(x_t, self.x0, t)


def smooth_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """An arbitrary deterministic eps predictor (stands in for a network)."""
    return torch.tanh(x_t) * 0.5 + (t.to(x_t.dtype) / 1000).view(-1, 1, 1, 1)


# -- timesteps ------------------------------------------------------------------------------


@given(st.integers(1, 2000), st.data(), st.sampled_from(SPACINGS))
def test_timesteps_are_unique_decreasing_and_in_range(num_timesteps, data, spacing):
    num_steps = data.draw(st.integers(1, num_timesteps))
    timesteps = make_timesteps(num_timesteps, num_steps, spacing)
    assert timesteps.dtype == torch.long
    assert timesteps.shape == (num_steps,)
    assert bool((timesteps[1:] < timesteps[:-1]).all())  # strictly decreasing => unique
    assert int(timesteps.min()) >= 0 and int(timesteps.max()) < num_timesteps


def test_timesteps_examples():
    assert make_timesteps(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert make_timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert make_timesteps(10, 4, "linspace").tolist() == [9, 6, 3, 0]
    assert DDPMSampler(LINEAR).timesteps.tolist() == list(range(999, -1, -1))
    assert DDIMSampler(LINEAR).timesteps[:3].tolist() == [980, 960, 940]


# -- DDPM step: the closed-form posterior ----------------------------------------------------


@given(st.integers(1, 999), st.sampled_from(["linear", "cosine"]))
def test_ddpm_step_equals_closed_form_posterior(t, name):
    """Ho et al. eq. 6-7, computed here from the betas directly: mean = sqrt(ab_{t-1}) beta_t /
    (1 - ab_t) x0 + sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t, var = (1 - ab_{t-1}) /
    (1 - ab_t) beta_t."""
    schedule = SCHEDULES[name]
    sampler = DDPMSampler(schedule, clip_sample=False)
    gen = torch.Generator().manual_seed(t)
    x_t, eps, z = (torch.randn(2, 1, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    beta = schedule.betas[t].item()
    ab_t = torch.prod(1 - schedule.betas[: t + 1]).item()
    ab_prev = torch.prod(1 - schedule.betas[:t]).item()
    x0 = (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    mean = (math.sqrt(ab_prev) * beta / (1 - ab_t)) * x0 + (
        math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t)
    ) * x_t
    std = math.sqrt((1 - ab_prev) / (1 - ab_t) * beta)
    assert torch.allclose(sampler.step(eps, t, x_t, noise=z), mean + std * z, rtol=1e-9, atol=1e-9)


def test_ddpm_fixed_large_variance_is_beta():
    sampler = DDPMSampler(LINEAR, variance="fixed_large", clip_sample=False)
    x_t, eps, z = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    t = 500
    assert torch.allclose(
        sampler.step(eps, t, x_t, noise=z), torch.full_like(z, LINEAR.betas[t].sqrt().item())
    )


def test_ddpm_last_step_returns_predicted_x0_without_noise():
    """At t = 0, alpha_bar_prev = 1: the posterior collapses onto the (clipped) x0 estimate."""
    sampler = DDPMSampler(LINEAR)
    x_t, eps = digits(seed=1) * 1.5, digits(seed=2)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    out = sampler.step(eps, 0, x_t, generator=gen)
    expected = LINEAR.x0_from_eps(x_t, eps, 0).clamp(-1, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(gen.get_state(), state)  # no noise drawn


# -- DDIM ------------------------------------------------------------------------------------


@given(st.integers(1, 998), st.sampled_from(["linear", "cosine"]))
def test_ddim_eta_one_over_all_timesteps_is_the_ddpm_posterior(t, name):
    """Song et al. eq. 16: with eta = 1 and consecutive timesteps, sigma_t^2 is DDPM's posterior
    variance and the mean is DDPM's posterior mean."""
    schedule = SCHEDULES[name]
    ddim = DDIMSampler(schedule, num_steps=1000, eta=1.0, clip_sample=False)
    ddpm = DDPMSampler(schedule, clip_sample=False)
    gen = torch.Generator().manual_seed(t)
    x_t, eps, z = (torch.randn(2, 1, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    zero = torch.zeros_like(z)
    ddim_mean, ddpm_mean = ddim.step(eps, t, x_t, noise=zero), ddpm.step(eps, t, x_t, noise=zero)
    assert torch.allclose(ddim_mean, ddpm_mean, rtol=1e-7, atol=1e-9)
    ddim_spread = ddim.step(eps, t, x_t, noise=z) - ddim_mean
    ddpm_spread = ddpm.step(eps, t, x_t, noise=z) - ddpm_mean
    assert torch.allclose(ddim_spread, ddpm_spread, rtol=1e-7, atol=1e-9)


@given(
    st.floats(0.01, 1.0),
    st.integers(1, 100),
    st.sampled_from(SPACINGS),
    st.sampled_from(["linear", "cosine", "scaled_linear"]),
)
def test_ddim_with_oracle_model_recovers_x0_from_any_strength(strength, num_steps, spacing, name):
    assume(int(num_steps * strength) >= 1)
    schedule = SCHEDULES[name]
    x0 = digits(2, dtype=torch.float64)
    oracle = OracleModel(schedule, x0)
    sampler = DDIMSampler(schedule, num_steps=num_steps, spacing=spacing)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=x0.dtype)
    out = sampler.img2img(oracle, x0, strength, noise=noise)
    assert torch.allclose(out, x0, atol=1e-7)


def test_ddim_with_oracle_model_recovers_x0_in_float32_from_pure_noise():
    x0 = digits(4)
    oracle = OracleModel(LINEAR, x0)
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    # sample() starts from noise alone; the oracle still knows x0, so DDIM lands on it.
    assert torch.allclose(DDIMSampler(LINEAR, 50).sample(oracle, x_T), x0, atol=1e-3)


def test_ddim_eta_zero_is_bitwise_deterministic_whatever_the_generator():
    sampler = DDIMSampler(LINEAR, num_steps=20)
    x0, noise = digits(), torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state_a = gen_a.get_state()
    a = sampler.img2img(smooth_model, x0, 0.6, noise=noise, generator=gen_a)
    b = sampler.img2img(smooth_model, x0, 0.6, noise=noise, generator=gen_b)
    c = sampler.img2img(smooth_model, x0, 0.6, noise=noise)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(gen_a.get_state(), state_a)  # no randomness used after the initial noise
    x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    assert torch.equal(
        sampler.sample(smooth_model, x_T, gen_a), sampler.sample(smooth_model, x_T, gen_b)
    )


def test_ddim_eta_positive_is_stochastic_and_seeded():
    sampler = DDIMSampler(LINEAR, num_steps=20, eta=0.5)
    x0 = digits()

    def run(seed):
        return sampler.img2img(smooth_model, x0, 0.5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))


# -- DDPM sampling ---------------------------------------------------------------------------


def test_ddpm_is_seeded_and_differs_across_seeds():
    sampler = DDPMSampler(LINEAR, num_steps=50)
    x0 = digits()

    def run(seed):
        return sampler.img2img(smooth_model, x0, 0.4, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


def test_step_uses_given_noise_and_leaves_generator_alone():
    sampler = DDPMSampler(LINEAR)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    x_t, eps, z = digits(seed=1), digits(seed=2), digits(seed=3)
    out = sampler.step(eps, 500, x_t, noise=z, generator=gen)
    assert torch.equal(gen.get_state(), state)
    drawn = sampler.step(eps, 500, x_t, generator=torch.Generator().manual_seed(9))
    expected = sampler.step(
        eps, 500, x_t, noise=torch.randn(z.shape, generator=torch.Generator().manual_seed(9))
    )
    assert torch.equal(drawn, expected)
    assert not torch.equal(out, drawn)


# -- image-to-image --------------------------------------------------------------------------


@given(st.floats(0.001, 1.0), st.integers(1, 200), st.sampled_from(SPACINGS), st.booleans())
def test_img2img_runs_exactly_the_steps_the_strength_gives(strength, num_steps, spacing, ddim):
    """diffusers' img2img: init = min(int(n * strength), n); run the last init timesteps,
    starting from add_noise(x0, noise, the first of them)."""
    init = min(int(num_steps * strength), num_steps)
    assume(init >= 1)
    sampler = (
        DDIMSampler(LINEAR, num_steps, spacing=spacing)
        if ddim
        else DDPMSampler(LINEAR, num_steps, spacing=spacing)
    )
    x0 = digits(1)
    model = OracleModel(LINEAR, x0)
    sampler.img2img(model, x0, strength, generator=torch.Generator().manual_seed(0),
                    start="diffusers")
    assert model.calls == sampler.timesteps[num_steps - init :].tolist()
    assert img2img_num_steps(num_steps, strength) == init


def test_img2img_starts_from_add_noise_at_its_first_timestep():
    sampler = DDIMSampler(LINEAR, num_steps=50)
    x0, noise = digits(2), digits(2, seed=4)
    seen = []

    def recording_model(x_t, t):
        seen.append(x_t.clone())
        return torch.zeros_like(x_t)

    sampler.img2img(recording_model, x0, 0.3, noise=noise, start="diffusers")
    assert len(seen) == 15
    assert torch.equal(seen[0], LINEAR.add_noise(x0, noise, 280))


def test_strength_one_uses_every_timestep_and_matches_sample():
    sampler = DDIMSampler(LINEAR, num_steps=10)
    x0, noise = digits(2), digits(2, seed=4)
    from_img2img = sampler.img2img(smooth_model, x0, 1.0, noise=noise, start="diffusers")
    x_start = LINEAR.add_noise(x0, noise, int(sampler.timesteps[0]))
    assert torch.equal(from_img2img, sampler.sample(smooth_model, x_start))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_sampling_keeps_input_dtype(dtype):
    out = DDIMSampler(LINEAR, 5).img2img(
        smooth_model, digits(2).to(dtype), 1.0, generator=torch.Generator().manual_seed(0)
    )
    assert out.dtype == dtype and out.shape == (2, 1, 28, 28)


def test_progress_bar_shows_and_changes_nothing(capsys):
    sampler = DDIMSampler(LINEAR, 10)
    x0, noise = digits(1), digits(1, seed=1)
    quiet = sampler.img2img(smooth_model, x0, 0.5, noise=noise)
    loud = sampler.img2img(smooth_model, x0, 0.5, noise=noise, progress=True)
    assert torch.equal(quiet, loud)
    assert "DDIM (5 steps)" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_with_a_cpu_generator():
    sampler = DDPMSampler(LINEAR, 20)
    x0 = digits(2)

    def run(device):
        gen = torch.Generator().manual_seed(0)
        return sampler.img2img(smooth_model, x0.to(device), 0.5, generator=gen).cpu()

    assert torch.allclose(run("cpu"), run("cuda"), atol=1e-4)


# -- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DDIMSampler(LINEAR, num_steps=0), "num_steps must be in [1, 1000], got 0"),
        (lambda: DDIMSampler(LINEAR, num_steps=1001), "num_steps must be in [1, 1000], got 1001"),
        (lambda: DDPMSampler(LINEAR, num_steps=2.5), "num_steps must be an integer, got 2.5"),
        (
            lambda: DDIMSampler(LINEAR, spacing="uniform"),
            "unknown spacing 'uniform'; allowed: leading",
        ),
        (lambda: DDIMSampler(LINEAR, eta=-0.1), "eta must be a number in [0, 1], got -0.1"),
        (lambda: DDIMSampler(LINEAR, eta=1.5), "eta must be a number in [0, 1], got 1.5"),
        (lambda: DDPMSampler(LINEAR, variance="learned"), "unknown variance 'learned'"),
    ],
)
def test_bad_sampler_arguments_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


@pytest.mark.parametrize("strength", [0, -0.1, 1.1, float("nan"), "0.5", True, None])
def test_bad_strength_is_rejected(strength):
    with pytest.raises(
        ValueError, match=re.escape(f"strength must be a number in (0, 1], got {strength!r}")
    ):
        DDIMSampler(LINEAR, 10).img2img(smooth_model, digits(1), strength)


def test_strength_too_small_for_the_step_count_is_rejected():
    with pytest.raises(
        ValueError, match=re.escape("strength 0.01 leaves no denoising step out of 50")
    ):
        DDIMSampler(LINEAR, 50).img2img(smooth_model, digits(1), 0.01, start="diffusers")


def test_mismatched_shapes_are_rejected():
    sampler = DDIMSampler(LINEAR, 10, eta=0.5)
    x = digits(2)
    with pytest.raises(
        ValueError, match=re.escape("eps shape (1, 1, 28, 28) must equal (2, 1, 28, 28)")
    ):
        sampler.step(x[:1], 900, x)
    with pytest.raises(ValueError, match="noise shape"):
        sampler.step(x, 900, x, noise=x[:, :, :14])
    with pytest.raises(ValueError, match="noise shape"):
        sampler.img2img(smooth_model, x, 0.5, noise=x[:1])
    with pytest.raises(ValueError, match="eps shape"):
        sampler.img2img(lambda x_t, t: x_t[:, :, :5], x, 0.5)


def test_step_rejects_a_timestep_outside_the_sequence():
    with pytest.raises(ValueError, match="timestep 901 is not one of this sampler's 10 timesteps"):
        DDIMSampler(LINEAR, 10).step(digits(1), 901, digits(1))
