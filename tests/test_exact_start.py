"""Image-to-image's exact start: every sampler and step count starts at
t_start = int(strength * T) - 1, and the loop runs any decreasing timestep sequence."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from diffbench import DDIMSampler, DDPMSampler, NoiseSchedule, Translator
from diffbench.sampling import SAMPLERS, STARTS, Timestep, exact_start, make_sampler
from diffbench.sampling.schedule import SPACINGS, make_start_timesteps

LINEAR = NoiseSchedule.linear()


def digits(batch: int = 2, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed),
                      dtype=dtype) * 2 - 1


def oracle(schedule: NoiseSchedule, x0: torch.Tensor):
    """Knows x0, so returns the exact noise in x_t: DDIM must land on x0 from any start."""
    return lambda x_t, t: schedule.eps_from_x0(x_t, x0, t)


# -- the timesteps ---------------------------------------------------------------------------


@pytest.mark.parametrize("strength, t_start", [(0.3, 299), (0.5, 499), (0.1, 99), (1.0, 999),
                                               (0.57, 569), (0.001, 0)])
@pytest.mark.parametrize("sampler, num_steps", [("ddpm", 1000), ("ddim", 10), ("ddim", 50),
                                                ("ddpm", 37), ("ddim", 1000)])
def test_exact_start_is_the_same_timestep_for_every_step_count(strength, t_start, sampler,
                                                               num_steps):
    chosen = make_sampler(sampler, LINEAR, num_steps)
    timesteps = chosen.img2img_timesteps(strength, start="exact")
    assert exact_start(1000, strength) == t_start == int(timesteps[0])
    assert len(timesteps) == max(1, int(num_steps * strength)) == chosen.nfe(strength, "exact")


@given(st.integers(1, 1200), st.data(), st.sampled_from(SPACINGS), st.floats(0.0005, 1.0))
def test_exact_timesteps_start_exactly_and_decrease_to_near_zero(num_timesteps, data, spacing,
                                                                 strength):
    assume(int(strength * num_timesteps) >= 1)
    num_steps = data.draw(st.integers(1, num_timesteps))
    schedule = NoiseSchedule.linear(num_timesteps, beta_end=min(0.02, 10 / num_timesteps))
    sampler = DDIMSampler(schedule, num_steps, spacing=spacing)
    timesteps = sampler.img2img_timesteps(strength, "exact")
    t_start = int(strength * num_timesteps) - 1
    k = max(1, int(num_steps * strength))
    assert timesteps.dtype == torch.long and timesteps.shape == (k,)
    assert int(timesteps[0]) == t_start
    assert bool((timesteps[1:] < timesteps[:-1]).all()) and int(timesteps[-1]) >= 0
    # Near 0: below one average stride.
    assert int(timesteps[-1]) <= (t_start + 1) / k


def test_ddpm_over_all_timesteps_starts_exactly_where_diffusers_does():
    """DDPM-1000 at strength s: diffusers runs the last int(1000 s) timesteps, i.e. from
    int(1000 s) - 1 down to 0; the exact start is the same schedule."""
    ddpm = DDPMSampler(LINEAR)
    for strength in (0.3, 0.5, 0.57, 0.999, 1.0, 0.001):
        exact = ddpm.img2img_timesteps(strength, "exact")
        assert torch.equal(exact, ddpm.img2img_timesteps(strength, "diffusers"))
        assert exact.tolist() == list(range(int(1000 * strength) - 1, -1, -1))
    x0, noise = digits(), digits(seed=1)
    runs = [ddpm.img2img(oracle(LINEAR, x0), x0, 0.3, noise=noise, start=start,
                         generator=torch.Generator().manual_seed(0)) for start in STARTS]
    assert torch.equal(*runs)


def test_ddim_50_at_0_3_runs_15_steps_from_299():
    ddim = DDIMSampler(LINEAR, 50)
    assert ddim.img2img_timesteps(0.3, "exact").tolist() == list(range(299, 0, -20))
    assert ddim.img2img_timesteps(0.3, "diffusers").tolist() == list(range(280, -1, -20))
    # DDIM-10: diffusers' convention starts at 200, the exact one at 299 (3 steps either way).
    assert DDIMSampler(LINEAR, 10).img2img_timesteps(0.3, "exact").tolist() == [299, 199, 99]
    assert DDIMSampler(LINEAR, 10).img2img_timesteps(0.3, "diffusers").tolist() == [200, 100, 0]


def test_make_start_timesteps_examples():
    assert make_start_timesteps(299, 15, "leading").tolist() == list(range(299, 0, -20))
    assert make_start_timesteps(299, 15, "trailing").tolist() == list(range(299, 0, -20))
    assert make_start_timesteps(299, 7, "leading").tolist() == [299, 257, 214, 171, 128, 85, 42]
    assert make_start_timesteps(299, 7, "trailing").tolist() == [299, 256, 213, 170, 128, 85, 42]
    assert make_start_timesteps(9, 4, "linspace").tolist() == [9, 6, 3, 0]
    for spacing in SPACINGS:
        assert make_start_timesteps(299, 1, spacing).tolist() == [299]
        assert make_start_timesteps(4, 5, spacing).tolist() == [4, 3, 2, 1, 0]


# -- the loop on any decreasing sequence ------------------------------------------------------


@given(st.floats(0.002, 1.0), st.integers(1, 100), st.sampled_from(SPACINGS))
def test_ddim_with_oracle_lands_on_x0_from_an_exact_start(strength, num_steps, spacing):
    """Every coefficient comes from the call's own timesteps, none of which need be in the
    sampler's sequence."""
    x0 = digits()
    sampler = DDIMSampler(LINEAR, num_steps, spacing=spacing)
    out = sampler.img2img(oracle(LINEAR, x0), x0, strength, noise=digits(seed=2), start="exact")
    assert torch.allclose(out, x0, atol=1e-7)


def test_denoise_runs_any_decreasing_sequence_and_timesteps_know_their_neighbours():
    sampler = DDIMSampler(LINEAR, 10, clip_sample=False)
    seen = []
    x0 = digits()

    def model(x_t, t):
        seen.append(int(t[0]))
        return oracle(LINEAR, x0)(x_t, t)

    x_t = LINEAR.add_noise(x0, digits(seed=3), 777)
    assert torch.allclose(sampler.denoise(model, x_t, torch.tensor([777, 123, 5])), x0)
    assert seen == [777, 123, 5]
    steps = sampler.steps_for([777, 123, 5])
    assert steps == [777, 123, 5] and isinstance(steps[0], Timestep) and steps[2].last
    ab = LINEAR.alphas_cumprod.tolist()
    assert sampler.alpha_bars(steps[0]) == (ab[777], ab[123])
    assert sampler.alpha_bars(steps[2]) == (ab[5], 1.0)
    assert sampler.alpha_bars(900) == (ab[900], ab[800])  # a plain int: its own sequence
    copied = copy.deepcopy(steps[1])
    assert (copied, copied.next, copied.alpha_bar, copied.index) == (123, 5, ab[123], 1)


@pytest.mark.parametrize("timesteps", [[], [5, 5], [3, 7], [1000, 3], [4, -1]])
def test_denoise_rejects_a_sequence_that_is_not_strictly_decreasing_in_range(timesteps):
    message = r"strictly decreasing sequence of integers in \[0, 1000\)"
    with pytest.raises(ValueError, match=message):
        DDIMSampler(LINEAR, 10).denoise(lambda x, t: x, digits(), torch.tensor(timesteps).long())


# -- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["Exact", "", None, 0, "leading"])
def test_a_bad_start_names_the_allowed_values(start, tiny_checkpoints):
    message = re.escape(f"unknown start {start!r}; allowed: exact, diffusers")
    sampler = DDIMSampler(LINEAR, 10)
    with pytest.raises(ValueError, match=message):
        sampler.img2img_timesteps(0.5, start)
    with pytest.raises(ValueError, match=message):
        sampler.img2img(lambda x, t: x, digits(), 0.5, start=start)
    with pytest.raises(ValueError, match=message):
        sampler.nfe(0.5, start)
    translator = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", 10)
    with pytest.raises(ValueError, match=message):
        Translator(translator.unet, translator.sampler, start=start)


def test_a_strength_below_one_timestep_is_rejected_by_the_exact_start():
    message = "strength 0.0005 leaves no denoising step: it starts below timestep 0 of 1000"
    with pytest.raises(ValueError, match=re.escape(message)):
        DDIMSampler(LINEAR, 10).img2img_timesteps(0.0005, "exact")
    with pytest.raises(ValueError, match=re.escape("strength must be a number in (0, 1]")):
        DDIMSampler(LINEAR, 10).img2img_timesteps(1.5, "exact")


# -- the Translator starts exactly -----------------------------------------------------------


@pytest.mark.parametrize("sampler, steps", [(name, 10) for name, cls in SAMPLERS.items()
                                            if "eps" in cls.predictions] + [("ddpm", None)])
def test_translators_start_at_the_same_timestep_and_count_their_evaluations(
    tiny_checkpoints, sampler, steps
):
    translator = Translator.from_checkpoints(tiny_checkpoints, "pixel", sampler, steps)
    assert translator.start == "exact"
    assert (translator.plan(0.3).start_timestep, translator.plan(0.5).start_timestep) == (299, 499)
    n = translator.num_steps
    assert translator.plan(0.3).nfe == translator.sampler.nfe(0.3, "exact")
    assert translator.plan(0.3).nfe in (int(n * 0.3), 2 * int(n * 0.3) - 1)  # Heun: 2k - 1


def test_the_translator_runs_the_exact_start(tiny_checkpoints):
    translator = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", 10)
    x0 = digits(2, dtype=torch.float32).repeat_interleave(4, -1).repeat_interleave(4, -2)[
        ..., :28, :28]
    calls = []
    unet = translator.unet

    def recording(x_t, t):
        calls.append(int(t[0]))
        return unet(x_t, t)

    translator.unet = recording
    out = translator(x0, 0.3, generator=torch.Generator().manual_seed(0))
    assert calls == [299, 199, 99]
    expected = translator.sampler.img2img(unet, x0, 0.3, generator=torch.Generator().manual_seed(0),
                                          start="exact").clamp(-1, 1)
    assert torch.equal(out, expected)
