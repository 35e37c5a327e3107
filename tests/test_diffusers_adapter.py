"""diffusers' parts as diffbench systems: any scheduler class as a sampler
(``sampler: "diffusers:DDIMScheduler"``, :mod:`diffbench.sampling.diffusers_adapter`) and a
``UNet2DModel.save_pretrained`` folder as a model (:mod:`diffbench.models.diffusers_unet`), on
the shipped checkpoints and real MNIST test digits.

diffusers is an optional dev dependency (`pip install -e .[parity]`); without it these skip.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from diffbench.core.errors import InputError
from diffbench.core.resources import checkpoints_dir
from diffbench.io.checkpoints import load_model
from diffbench.io.config import SystemConfig
from diffbench.io.data import load_mnist
from diffbench.sampling import sampler_class
from diffbench.systems.networks import load_plugin_model
from diffbench.systems.translate import Translator

diffusers = pytest.importorskip("diffusers")
# diffusers 0.42 calls np.array on torch tensors the way numpy 2 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TOLERANCE = 1e-4
"""Max abs difference allowed between the adapter and diffbench's own sampler on the same
network, noise and generator. Both run the same formulas on the same float32 network outputs;
they differ in arithmetic only (diffbench: float64 coefficients; diffusers: float32 tables, its
betas the schedule's cast to float32), ~1e-6 a step, compounded over at most 25 steps and
amplified by the network's Lipschitz constant: 1e-4 is far above that and far below the 1e-2
a misplaced timestep or a missing clip makes (measured: see the assertions' messages)."""


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load_mnist("test", mnist_dir, limit=4).images


def run(system: dict, digits, strength: float, seed: int = 0) -> tuple[Translator, torch.Tensor]:
    """A compare config's system built as ``diffbench compare`` builds it, run once."""
    translator = Translator.from_config(SystemConfig(**system), checkpoints_dir())
    return translator, translator(digits, strength, translator.generator(seed))


@pytest.mark.parametrize("space", ["pixel", "latent"])
@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("strength", [0.3, 0.5])
def test_ddim_scheduler_reproduces_the_built_in_ddim(space, steps, strength, digits):
    ours, expected = run({"space": space, "sampler": "ddim", "steps": steps}, digits, strength)
    adapter, got = run({"space": space, "sampler": "diffusers:DDIMScheduler", "steps": steps},
                       digits, strength)
    assert (got - expected).abs().max() <= TOLERANCE, (got - expected).abs().max()
    # Their plans are one: the same timesteps from the same exact start, one call each.
    mine, theirs = ours.plan(strength), adapter.plan(strength)
    assert torch.equal(mine.timesteps, theirs.timesteps)
    assert (mine.nfe, mine.start_timestep) == (theirs.nfe, theirs.start_timestep)
    assert theirs.start_timestep == int(strength * 1000) - 1
    assert adapter.name == f"{'LDM-' if space == 'latent' else ''}DDIMScheduler-{steps}"
    assert adapter.sampler_name == "diffusers:DDIMScheduler"


@pytest.mark.parametrize("space", ["pixel", "latent"])
@pytest.mark.parametrize("strength", [0.3, 0.5])
def test_dpm_solver_multistep_reproduces_dpmsolver_plus_plus(space, strength, digits):
    """DPMSolverMultistepScheduler's defaults are DPM-Solver++(2M) (algorithm dpmsolver++,
    solver_order 2, midpoint, final sigma 0), diffbench's ``dpmsolver++``; at diffbench's
    default spacing for it, trailing, both run the exact start's timesteps. In pixel space the
    scheduler, which has no clip_sample option, gets the output recomputed from the clipped
    x0, so both clip alike (without it the digits here differ by 0.01 to 0.03).
    """
    system = {"space": space, "steps": 10, "spacing": "trailing"}
    ours, expected = run({**system, "sampler": "dpmsolver++"}, digits, strength)
    adapter, got = run({**system, "sampler": "diffusers:DPMSolverMultistepScheduler"}, digits,
                       strength)
    assert torch.equal(ours.plan(strength).timesteps, adapter.plan(strength).timesteps)
    assert ours.plan(strength).nfe == adapter.plan(strength).nfe
    assert (got - expected).abs().max() <= TOLERANCE, (got - expected).abs().max()


@pytest.mark.parametrize("scheduler, nfe", [("EulerDiscreteScheduler", 5),
                                            ("HeunDiscreteScheduler", 9),
                                            ("UniPCMultistepScheduler", 4),
                                            ("LCMScheduler", 5), ("DDPMScheduler", 5)])
def test_other_schedulers_run_as_samplers(scheduler, nfe, digits):
    """Heun's NFE counts its two calls a step but the last; UniPC takes no custom timesteps,
    so it runs its own grid's timesteps below the exact start (400, 300, 200, 100)."""
    translator, x = run({"space": "pixel", "sampler": f"diffusers:{scheduler}", "steps": 10},
                        digits, 0.5)
    assert translator.plan(0.5).nfe == nfe
    assert x.shape == digits.shape and torch.isfinite(x).all()
    assert (x - digits).abs().mean() < 0.5  # a digit came back, not noise


@pytest.mark.parametrize("spec, fragment", [
    ("diffusers:NoSuchScheduler", "diffusers has no NoSuchScheduler"),
    ("diffusers:UNet2DModel", "not a Sampler subclass"),
    ("diffusers:FlowMatchEulerDiscreteScheduler", "takes no trained_betas"),
])
def test_bad_schedulers_are_one_input_error(spec, fragment):
    with pytest.raises(InputError, match=fragment):
        sampler_class(spec)
    with pytest.raises(ValueError, match=fragment):
        SystemConfig(space="pixel", sampler=spec)


def test_a_scheduler_needing_a_missing_package_names_it():
    try:
        import torchsde  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="pip install torchsde"):
            sampler_class("diffusers:DPMSolverSDEScheduler")
    else:
        assert sampler_class("diffusers:DPMSolverSDEScheduler").label == "DPMSolverSDEScheduler"


def test_importing_the_samplers_imports_no_diffusers():
    probe = "import sys, diffbench.sampling; print('diffusers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "False"


@pytest.fixture(scope="module")
def peer_folder(tmp_path_factory):
    """The shipped diffusers peer's UNet2DModel, saved as a diffusers folder."""
    peer, _ = load_model(checkpoints_dir() / "peer.safetensors", "cpu")
    folder = tmp_path_factory.mktemp("peer_unet")
    peer.unet.save_pretrained(folder)
    return peer, folder


def test_a_unet2dmodel_folder_is_the_model_it_saved(peer_folder, digits):
    peer, folder = peer_folder
    model = load_plugin_model(str(folder), (1, 28, 28), torch.device("cpu"))
    x, t = digits * 0.8, torch.tensor([10, 200, 500, 900])
    with torch.inference_mode():
        expected = peer.unet(torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0), t).sample
        assert torch.equal(model(x, t), expected[..., 2:-2, 2:-2])


def test_a_compare_system_runs_a_unet2dmodel_folder(peer_folder, digits):
    _, folder = peer_folder
    translator, x = run({"space": "pixel", "sampler": "diffusers:DDIMScheduler", "steps": 10,
                         "model": str(folder)}, digits, 0.5)
    assert translator.name == "DDIMScheduler-10"
    assert (x - digits).abs().mean() < 0.5


def test_a_folder_of_another_class_is_one_input_error(tmp_path):
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    with pytest.raises(InputError, match="holds a 'AutoencoderKL', not a UNet2DModel"):
        load_plugin_model(str(tmp_path), (1, 28, 28), torch.device("cpu"))
    with pytest.raises(ValueError, match="folder saved by UNet2DModel.save_pretrained"):
        SystemConfig(space="pixel", sampler="ddim", model=str(tmp_path / "missing"))
