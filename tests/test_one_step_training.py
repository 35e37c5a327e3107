"""The one-step objectives (Easy Consistency Tuning, MeanFlow) and MeanFlow's second time
input: each loss vanishes on the exact solution of its identity and not elsewhere, ECT's pair
narrows with its stage, and the interval MLP starts as the identity on the flow network."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffbench.core.errors import InputError
from diffbench.io.config import ConfigError, TrainConfig
from diffbench.models import UNet, UNetConfig
from diffbench.train.one_step import (
    consistency_function,
    consistency_loss,
    ect_pair,
    meanflow_loss,
)


class Oracle(torch.nn.Module):
    """The exact networks for data that is one image ``x0``: the flow velocity ``(x - x0) / s``
    is constant along each straight path, so it is also the consistency network's ``F`` and
    MeanFlow's average velocity over any interval."""

    def __init__(self, x0: torch.Tensor, bend: float = 0.0) -> None:
        super().__init__()
        self.x0, self.bend = x0, bend
        self.weight = torch.nn.Parameter(torch.ones(()))  # something for backward to reach

    def forward(self, x, t, r=None):
        s = (t / 1000).reshape(-1, 1, 1, 1)
        return self.weight * (x - self.x0) / s + self.bend * x


def config(**fields) -> TrainConfig:
    base = {"kind": "pixel", "steps": 10, "prediction": "consistency", "init_from": "x",
            "logit_mean": -1.1, "logit_std": 2.0}
    return TrainConfig(**{**base, **fields})


def batch_of_one_image(count: int = 16) -> torch.Tensor:
    x0 = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return x0.expand(count, -1, -1, -1).clone()


@given(stage=st.integers(0, 12), sigma=st.floats(1e-4, 0.999))
def test_ect_pair_lies_below_and_narrows_with_the_stage(stage, sigma):
    s = torch.tensor([sigma], dtype=torch.float64)
    r, later = ect_pair(s, stage), ect_pair(s, stage + 1)
    assert 0 <= r.item() < sigma
    assert later.item() >= r.item()  # the gap never widens


def test_ect_pair_starts_as_diffusion_and_ends_near_the_diagonal():
    sigma = torch.tensor([0.05, 0.3, 0.5], dtype=torch.float64)
    assert torch.all(ect_pair(sigma, 0) == 0)  # n(t) / 2 >= 1 for t < ~1.95: r = 0, f -> x0
    t = sigma / (1 - sigma)
    r = ect_pair(sigma, 12)
    assert torch.all((t - r / (1 - r)) / t < 3e-3)  # gap n(t) / 2^13 of t


def test_the_consistency_function_is_the_identity_at_zero():
    x = torch.randn(3, 1, 6, 6)
    model = UNet(UNetConfig(image_size=6, base_channels=8, num_groups=4))
    torch.nn.init.normal_(model.out[-1].weight)  # a network whose output is not zero
    assert torch.equal(consistency_function(model, x, torch.zeros(3)), x)


@pytest.mark.parametrize("progress", [0.0, 0.5, 0.99])
def test_consistency_loss_vanishes_on_the_exact_network_only(progress):
    batch = batch_of_one_image()
    gen = torch.Generator().manual_seed(1)
    exact = consistency_loss(Oracle(batch[:1]), batch, gen, config(), progress)
    wrong = consistency_loss(Oracle(batch[:1], bend=0.3), batch,
                             torch.Generator().manual_seed(1), config(), progress)
    assert exact.item() < 1e-4
    assert wrong.item() > 1e-2


def test_meanflow_loss_vanishes_on_the_exact_average_velocity_only():
    batch = batch_of_one_image()
    settings = config(prediction="meanflow", logit_mean=-0.4, logit_std=1.0, meanflow_ratio=0.5,
                      model={"interval_time": True})
    exact_model = Oracle(batch[:1])
    exact = meanflow_loss(exact_model, batch, torch.Generator().manual_seed(2), settings)
    exact.backward()  # through the JVP's primal output
    assert exact_model.weight.grad is not None
    wrong = meanflow_loss(Oracle(batch[:1], bend=0.3), batch, torch.Generator().manual_seed(2),
                          settings)
    assert exact.item() < 1e-6
    assert wrong.item() > 1e-2


def test_the_interval_input_starts_as_the_flow_network_for_every_r():
    small = {"image_size": 8, "base_channels": 8, "num_groups": 4}
    flow = UNet(UNetConfig(**small))
    torch.nn.init.normal_(flow.out[-1].weight)
    meanflow = UNet(UNetConfig(**small, interval_time=True))
    missing, unexpected = meanflow.load_state_dict(flow.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("interval_mlp.") for key in missing)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([999.0, 700.0, 300.0, 20.0])
    for r in (None, torch.zeros(4), t * 0.5, t):
        torch.testing.assert_close(meanflow(x, t, r), flow(x, t), rtol=0, atol=0)
    with pytest.raises(InputError, match="interval_time"):
        flow(x, t, t)


@pytest.mark.parametrize("fields,message", [
    ({"prediction": "consistency", "init_from": None}, "set init_from"),
    ({"prediction": "flow", "init_from": "x.safetensors"}, "trains from scratch"),
    ({"prediction": "meanflow", "init_from": "x.safetensors"}, "interval_time"),
])
def test_tuned_predictions_need_their_start(fields, message, mnist_dir):
    from diffbench.train.tasks import build_task

    with pytest.raises(ConfigError, match=message):
        build_task(config(data_dir=str(mnist_dir), **fields), torch.device("cpu"))
