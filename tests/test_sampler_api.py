"""The sampler API a user builds on: the plan, the per-step callback, the shared loop that a
two-evaluation solver fits, and spacing and eta from a compare config."""

from __future__ import annotations

import pytest
import torch

from diffbench.core.errors import InputError
from diffbench.io.config import CompareConfig, validate
from diffbench.sampling import SAMPLERS, make_sampler
from diffbench.sampling.schedule import NoiseSchedule
from diffbench.systems.translate import Translator

LINEAR = NoiseSchedule.linear(1000)


def digits(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64) * 2 - 1


def eps_oracle(x0: torch.Tensor):
    """The eps that is exactly right for ``x0``: (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    ab = LINEAR.alphas_cumprod.to(torch.float64)

    def model(x_t, t):
        a = ab[int(t[0])]
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    return model


def velocity_oracle(x0: torch.Tensor, noise: torch.Tensor):
    """The velocity eps - x0 of the straight path from ``x0`` to ``noise``."""
    return lambda x_s, t: noise - x0


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmsolver++", "euler", "heun", "unipc"])
def test_the_callback_sees_every_step_with_its_x0(name):
    sampler = make_sampler(name, LINEAR, 10)
    x0, noise = digits(0), digits(1)
    seen = []
    sampler.img2img(eps_oracle(x0), x0, 0.5, noise=noise, callback=seen.append,
                    generator=torch.Generator().manual_seed(0))
    plan = sampler.plan(0.5)
    assert [s["i"] for s in seen] == list(range(plan.steps))
    assert [s["t"] for s in seen] == plan.timesteps.tolist()
    # the first state is the noised input, by the forward process written out by hand
    a = LINEAR.alphas_cumprod.to(torch.float64)[plan.start_timestep]
    torch.testing.assert_close(seen[0]["x"], a.sqrt() * x0 + (1 - a).sqrt() * noise)
    for state in seen:  # an exact model predicts the source at every step
        torch.testing.assert_close(state["x0"], x0, atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", ["flow-euler", "flow-heun", "flow-dpmsolver++"])
def test_the_flow_callback_sees_every_sigma_with_its_x0(name):
    sampler = make_sampler(name, LINEAR, 10)
    x0, noise = digits(0), digits(1)
    seen = []
    sampler.img2img(velocity_oracle(x0, noise), x0, 0.5, noise=noise, callback=seen.append)
    plan = sampler.plan(0.5)
    assert [s["i"] for s in seen] == list(range(plan.steps))
    assert [s["t"] for s in seen] == pytest.approx(plan.timesteps.tolist())
    torch.testing.assert_close(seen[0]["x"], 0.5 * x0 + 0.5 * noise)  # sigma = 0.5, by hand
    for state in seen:
        torch.testing.assert_close(state["x0"], x0, atol=1e-7, rtol=0)


def test_no_callback_changes_nothing():
    sampler = make_sampler("heun", LINEAR, 10)
    x0, noise = digits(0), digits(1)
    model = eps_oracle(x0 * 0.5)  # not exact: the trajectory matters
    quiet = sampler.img2img(model, x0, 0.5, noise=noise)
    watched = sampler.img2img(model, x0, 0.5, noise=noise, callback=lambda state: None)
    assert torch.equal(quiet, watched)


def test_every_sampler_runs_the_shared_loop():
    """A multistep or two-evaluation solver, on either path, fits the base loop through solve:
    none overrides denoise."""
    for name, cls in SAMPLERS.items():
        overrides = [klass.__name__ for klass in cls.__mro__[:-1]
                     if "denoise" in vars(klass) and klass.__name__ != "Sampler"]
        assert overrides == [], name


def test_heun_calls_the_network_two_times_a_step_but_the_last():
    sampler = make_sampler("heun", LINEAR, 10)
    calls = []

    def model(x_t, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x_t)

    sampler.img2img(model, digits(0), 0.5, noise=digits(1))
    steps = sampler.plan(0.5).timesteps.tolist()  # [499, 399, 299, 199, 99] from the exact start
    assert steps == [499, 399, 299, 199, 99]
    expected = [c for t, n in zip(steps, [*steps[1:], None]) for c in ([t, n] if n else [t])]
    assert calls == expected and len(calls) == 2 * 5 - 1 == sampler.plan(0.5).nfe


def test_spacing_and_eta_come_from_a_compare_config(tiny_checkpoints):
    config = validate(CompareConfig, {"systems": [
        {"space": "pixel", "sampler": "ddim", "steps": 10, "spacing": "trailing", "eta": 0.5}]})
    (system,) = config.systems
    translator = Translator.from_config(system, tiny_checkpoints)
    assert translator.sampler.spacing == "trailing" and translator.sampler.eta == 0.5
    assert translator.name == "DDIM-10-trailing"  # not the leading DDIM-10's name
    assert translator.sampler.timesteps.tolist()[:2] == [999, 899]  # trailing: from T - 1
    default = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", 10)
    assert default.sampler.spacing == "leading" and default.name == "DDIM-10"
    assert default.sampler.timesteps.tolist()[:2] == [900, 800]


def test_a_bad_spacing_is_one_clear_error(tiny_checkpoints):
    message = (r"systems\.0\.spacing: Input should be 'leading', 'trailing' or 'linspace' "
               r"\(got 'middle'\)")
    with pytest.raises(InputError, match=message):
        validate(CompareConfig, {"systems": [
            {"space": "pixel", "sampler": "ddim", "spacing": "middle"}]})
    with pytest.raises(InputError, match="flow sigmas are spaced by linspace or trailing, got "
                                         "'leading'"):
        Translator.from_checkpoints(tiny_checkpoints, "pixel", "euler", 10, prediction="flow",
                                    spacing="leading")
