"""Installed plug-ins: samplers and models that packages declare in the entry-point groups
``diffbench.samplers`` and ``diffbench.models``, found without an import by hand.

The installed example package (``pip install -e examples/diffbench-example``, as CI does)
declares ``clipped-ddim`` and ``example-pixel``; the broken and clashing plug-ins are real
distribution metadata (a ``*.dist-info`` folder with ``entry_points.txt``) on ``sys.path`` of a
fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffbench.core.errors import InputError
from diffbench.core.plugins import MODEL_GROUP, installed
from diffbench.io.config import SystemConfig
from diffbench.io.config_files import ConfigError
from diffbench.sampling import ORIGINS, SAMPLERS, sampler_class

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "diffbench-example"
NOT_INSTALLED = "the example package is not installed: pip install -e examples/diffbench-example"


@pytest.fixture(scope="module")
def example_installed() -> None:
    assert "clipped-ddim" in SAMPLERS, NOT_INSTALLED


def fake_distribution(folder: Path, name: str, entry_points: str) -> None:
    """A real installed distribution's metadata: what ``importlib.metadata`` reads."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def run_python(code: str, path: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    if path is not None:
        environ["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, cwd=REPO, timeout=120)


def test_an_installed_sampler_is_registered_by_its_entry_point_name(example_installed):
    cls = SAMPLERS["clipped-ddim"]
    assert cls.__module__ == "diffbench_example.sampler"
    assert (cls.name, cls.label) == ("clipped-ddim", "CDDIM")
    assert ORIGINS["clipped-ddim"] == "diffbench-example 0.1.0"
    assert sampler_class("clipped-ddim") is cls
    assert "ddim" not in ORIGINS  # built-ins have no origin


def test_diffbench_list_shows_installed_samplers_and_models(example_installed):
    listed = subprocess.run([sys.executable, "-m", "diffbench", "list", "samplers", "--json"],
                            capture_output=True, text=True, check=True, cwd=REPO)
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows["clipped-ddim"]["from"] == "diffbench-example 0.1.0"
    assert rows["ddim"]["from"] == "diffbench"
    models = subprocess.run([sys.executable, "-m", "diffbench", "list", "models"],
                            capture_output=True, text=True, check=True, cwd=REPO)
    assert "example-pixel  diffbench_example.model:pixel_network  diffbench-example" in \
        models.stdout


def test_configs_name_installed_samplers_and_models(example_installed):
    config = SystemConfig(space="pixel", sampler="clipped-ddim", steps=10, model="example-pixel")
    assert (config.sampler, config.model) == ("clipped-ddim", "example-pixel")
    with pytest.raises(ValueError, match=r"installed model \(example-pixel\)"):
        SystemConfig(space="pixel", sampler="ddim", model="no-such-model")


def test_an_installed_model_runs_as_a_system(example_installed, mnist_dir):
    """The example's model is the shipped pixel network: with DDIM it gives the shipped DDIM's
    outputs exactly."""
    from diffbench.io.data import load_mnist
    from diffbench.systems.translate import Translator

    digits = load_mnist("test", mnist_dir).images[:2]
    shipped = REPO / "fixtures" / "checkpoints"
    outputs = []
    for model in ("example-pixel", None):
        system = Translator.from_config(SystemConfig(space="pixel", sampler="ddim", steps=10,
                                                     model=model), shipped)
        outputs.append(system(digits, 0.3, generator=system.generator(0)))
    assert outputs[0].shape == digits.shape
    assert (outputs[0] == outputs[1]).all()
    assert "example-pixel" in installed(MODEL_GROUP)


def test_evaluate_takes_installed_and_plug_in_samplers(example_installed):
    from diffbench.cli import build_parser

    args = build_parser(["evaluate"]).parse_args(
        ["evaluate", "--samplers", "clipped-ddim", "diffbench_example.sampler:ClippedDDIMSampler"])
    assert args.samplers == ["clipped-ddim", "diffbench_example.sampler:ClippedDDIMSampler"]


def test_a_broken_installed_sampler_warns_once_and_is_named_in_the_error(tmp_path):
    fake_distribution(tmp_path, "broken_plugin",
                      "[diffbench.samplers]\nbroken = no_such_module_here:Sampler\n")
    code = ("import warnings\nwarnings.simplefilter('always')\n"
            "from diffbench.sampling import SAMPLERS, sampler_class\n"
            "assert 'broken' not in SAMPLERS and 'ddim' in SAMPLERS\n"
            "sampler_class('broken')\n")
    done = run_python(code, tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("PluginWarning: installed plug-in 'broken'") == 1
    assert "no_such_module_here:Sampler from broken_plugin 0.1 (ModuleNotFoundError" in \
        done.stderr
    assert "installed but not loaded: broken (no_such_module_here:Sampler" in \
        done.stderr.splitlines()[-1]


def test_an_installed_sampler_cannot_replace_a_built_in(tmp_path):
    (tmp_path / "clashing.py").write_text(
        "from diffbench.sampling import DDIMSampler\n\nclass MyDDIM(DDIMSampler):\n    pass\n")
    fake_distribution(tmp_path, "clashing_plugin", "[diffbench.samplers]\nddim = clashing:MyDDIM\n")
    code = ("import warnings\nwarnings.simplefilter('always')\n"
            "from diffbench.sampling import SAMPLERS, DDIMSampler\n"
            "assert SAMPLERS['ddim'] is DDIMSampler\nprint('kept')\n")
    done = run_python(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "kept"
    assert "installed sampler 'ddim' from clashing_plugin 0.1 skipped" in done.stderr


def test_an_installed_non_sampler_is_skipped_with_a_warning(tmp_path):
    fake_distribution(tmp_path, "wrong_plugin",
                      "[diffbench.samplers]\nnot-one = diffbench.core.errors:InputError\n")
    done = run_python("from diffbench.sampling import SAMPLERS\nprint('not-one' in SAMPLERS)",
                      tmp_path)
    assert done.stdout.strip() == "False"
    assert "installed sampler 'not-one' from wrong_plugin 0.1 skipped" in done.stderr
    assert "not a Sampler subclass" in done.stderr


def test_autoload_can_be_disabled(tmp_path):
    fake_distribution(tmp_path, "broken_plugin",
                      "[diffbench.samplers]\nbroken = no_such_module_here:Sampler\n")
    done = run_python("from diffbench.sampling import SAMPLERS\nprint(len(SAMPLERS))", tmp_path,
                      DIFFBENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    assert done.returncode == 0 and "PluginWarning" not in done.stderr
    assert "clipped-ddim" not in done.stdout


def test_an_installed_model_that_fails_to_import_is_one_error(tmp_path):
    fake_distribution(tmp_path, "broken_models",
                      "[diffbench.models]\nbroken-net = no_such_module_here:make\n")
    code = ("from diffbench.core.plugins import model_factory\n"
            "model_factory('broken-net', 'a model factory')\n")
    done = run_python(code, tmp_path)
    assert "InputError: installed model 'broken-net' (no_such_module_here:make from " \
           "broken_models 0.1) cannot be loaded (ModuleNotFoundError" in done.stderr


def test_an_unknown_model_name_lists_the_installed_ones():
    from diffbench.core.plugins import model_factory

    with pytest.raises(InputError, match=r"unknown model 'nope'; allowed: 'package.module:"
                                         r"factory' or an installed model"):
        model_factory("nope", "a model factory")


def test_a_config_error_names_the_unknown_sampler():
    with pytest.raises(ConfigError, match=r"systems.0.sampler"):
        from diffbench.io.config import CompareConfig
        from diffbench.io.config_files import validate

        validate(CompareConfig, {"systems": [{"space": "pixel", "sampler": "no-such"}]})
