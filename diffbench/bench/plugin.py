"""diffbench's pytest plugin: options, markers and fixtures to benchmark a sampler or model.

Registered by the entry point ``[project.entry-points.pytest11] diffbench``, so pytest imports it
in every project where diffbench is installed: it imports no torch, mlflow or pydantic itself;
its fixtures load them on first use. Options are prefixed ``--diffbench-`` (like
pytest-benchmark's ``--benchmark-``); pytest-benchmark's hook
(:mod:`diffbench.bench.benchmark_json`) is registered only where pytest-benchmark is installed.
docs/pytest_plugin.md shows a test using every fixture.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from diffbench.bench.env import BenchEnv, BenchSettings
    from diffbench.core.system import System
    from diffbench.measure.scoring import Digits

MARKERS = (
    "quick: the benchmark subset CI runs (nox -s benches-quick)",
    "cuda: needs a CUDA device, skipped without one (benches/gpu.sh runs them: -m cuda)",
)
# device -> (its baseline's option, ini key, default file in the rootdir)
BASELINES = {
    "cpu": ("diffbench_fidelity_baseline", "diffbench_fidelity_baseline",
            "diffbench_fidelity.json"),
    "cuda": ("diffbench_fidelity_baseline_cuda", "diffbench_fidelity_baseline_cuda",
             "diffbench_fidelity_cuda.json"),
}
REQUIRE_INI = "diffbench_require_fidelity_baseline"
RECORDED = pytest.StashKey[list]()  # the baseline files the session wrote


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("diffbench", "diffbench: benchmark samplers and models")
    group.addoption("--diffbench-checkpoints", metavar="DIR", default=None,
                    help="folder of trained checkpoints (default: the ones diffbench ships)")
    group.addoption("--diffbench-mlflow", action="store_true",
                    default=os.environ.get("DIFFBENCH_MLFLOW") == "1",
                    help="log the benchmark session to MLflow (also DIFFBENCH_MLFLOW=1)")
    group.addoption("--diffbench-profile", metavar="DIR", default=None,
                    help="write a Perfetto trace and a key_averages table per profiled case "
                         "under DIR")
    group.addoption("--diffbench-fidelity-baseline", metavar="FILE", default=None,
                    help="the CPU cases' fidelity baseline (default: the ini key "
                         "diffbench_fidelity_baseline, else <rootdir>/diffbench_fidelity.json)")
    group.addoption("--diffbench-fidelity-baseline-cuda", metavar="FILE", default=None,
                    help="the CUDA cases' fidelity baseline (default: the ini key "
                         "diffbench_fidelity_baseline_cuda, else "
                         "<rootdir>/diffbench_fidelity_cuda.json)")
    group.addoption("--diffbench-update-fidelity-baseline", action="store_true",
                    help="record this run's fidelity as the new baseline instead of checking it")
    group.addoption("--diffbench-system", action="append", default=[], metavar="YAML",
                    help="a compare-config system for benches that take extra systems, e.g. "
                         "'{name: my-euler, space: pixel, sampler: \"mypkg.samplers:Euler\", "
                         "steps: 20}'; repeatable")
    for _, ini, default in BASELINES.values():
        parser.addini(ini, f"fidelity baseline file, relative to the ini file (default: "
                           f"{default})", default=default)
    parser.addini(REQUIRE_INI, "the CPU fidelity baseline must exist: a missing one fails the "
                               "checked cases instead of being recorded", type="bool",
                  default=False)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    if config.pluginmanager.hasplugin("benchmark"):
        from diffbench.bench import benchmark_json

        config.pluginmanager.register(benchmark_json, "diffbench-benchmark-json")


def baseline_path(config: pytest.Config, device: str) -> Path:
    """The device's baseline file: its option (relative to the working folder), else the ini
    key (relative to the ini file, else the rootdir)."""
    option, ini, _ = BASELINES[device]
    given = config.getoption(option)
    if given:
        return Path(given)
    base = config.inipath.parent if config.inipath else config.rootpath
    return base / str(config.getini(ini))


def checkpoints(config: pytest.Config) -> Path:
    """--diffbench-checkpoints, else the shipped checkpoints."""
    given = config.getoption("diffbench_checkpoints")
    if given:
        return Path(given)
    from diffbench.core.resources import checkpoints_dir

    return checkpoints_dir()


def settings(config: pytest.Config) -> BenchSettings:
    """The session's :class:`~diffbench.bench.env.BenchSettings`, from the options."""
    from diffbench.bench.env import BASELINE_DEVICES, BenchSettings

    profile = config.getoption("diffbench_profile")
    return BenchSettings(
        checkpoints=checkpoints(config),
        baselines={device: baseline_path(config, device) for device in BASELINE_DEVICES},
        update_baseline=config.getoption("diffbench_update_fidelity_baseline"),
        require_cpu_baseline=bool(config.getini(REQUIRE_INI)),
        profile_dir=Path(profile) if profile else None,
        data_dir=os.environ.get("DIFFBENCH_DATA_DIR") or None,
    )


@pytest.fixture(scope="session")
def diffbench_env(request: pytest.FixtureRequest) -> Iterator[BenchEnv]:
    """The session's :class:`~diffbench.bench.env.BenchEnv`: checkpoints, digits, judges,
    systems, fidelity and its baselines; the baselines it recorded are written at the end."""
    from diffbench.bench.env import BenchEnv
    from diffbench.core.errors import InputError

    try:
        env = BenchEnv(settings(request.config))
    except InputError as error:
        pytest.exit(f"error: {error}", 2)
    yield env
    for path in env.save_baselines():
        request.config.stash.setdefault(RECORDED, []).append(path)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Name the fidelity baselines this session wrote."""
    for path in config.stash.get(RECORDED, []):
        terminalreporter.write_line(f"diffbench: recorded the fidelity baseline {path}")


@pytest.fixture(scope="session")
def diffbench_system(diffbench_env: BenchEnv) -> Callable[..., System]:
    """``diffbench_system(config, device="cpu", **options)``: the loaded System a compare-config
    mapping names, e.g. ``{"space": "pixel", "sampler": "ddim", "steps": 10}`` or a plug-in
    ``"sampler": "package.module:Name"`` / ``"model": "package.module:factory"``; options such
    as ``compile=...``, ``channels_last=...``. Loaded once per session."""

    def load(config: Mapping, device: str = "cpu", **options: Any) -> System:
        return diffbench_env.system(config, device, **options)

    return load


@pytest.fixture(scope="session")
def diffbench_digits(diffbench_env: BenchEnv) -> Digits:
    """The first 64 real MNIST test digits on the CPU (``.images``, ``.labels``): the shipped
    ones, or those of ``$DIFFBENCH_DATA_DIR``."""
    return diffbench_env.digits("cpu")


@pytest.fixture(scope="session")
def diffbench_judge(diffbench_env: BenchEnv) -> Callable[..., dict[str, float]]:
    """``diffbench_judge(system, strength, device="cpu", count=32)``: the classifier's scoring of
    ``system`` at ``strength`` on the first ``count`` digits, the fidelity row (mse, psnr, ssim,
    preservation, noised_accuracy, frechet_distance, kid, each with its ``_ci95``)."""

    def score(system: System, strength: float, device: str = "cpu",
              count: int | None = None) -> dict[str, float]:
        from diffbench.bench.env import FIDELITY_IMAGES

        return diffbench_env.fidelity(system, strength, device, count or FIDELITY_IMAGES)

    return score


@pytest.fixture
def diffbench_fidelity(diffbench_env: BenchEnv) -> Callable[..., dict[str, float]]:
    """``diffbench_fidelity(system, strength, device="cpu", count=32, case=None)``: score the
    system and check it against the baseline file (recording it where the file is new, or with
    --diffbench-update-fidelity-baseline); fails the test naming each regression. Returns the
    fidelity row."""

    def check(system: System, strength: float, device: str = "cpu", count: int | None = None,
              case: str | None = None) -> dict[str, float]:
        from diffbench.bench.env import FIDELITY_IMAGES

        measured, problems = diffbench_env.check_fidelity(
            system, strength, device, count or FIDELITY_IMAGES, case)
        if problems:
            path = diffbench_env.baseline(device).path
            pytest.fail(f"fidelity regression: {'; '.join(problems)} (baseline {path}; if the "
                        f"change is intended, rerun with --diffbench-update-fidelity-baseline)",
                        pytrace=False)
        return measured

    return check
