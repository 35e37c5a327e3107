"""A benchmark session's shared state, behind the ``diffbench_env`` fixture of
:mod:`diffbench.bench.plugin`: checkpoints, real test digits, classifiers (judges), systems from a
compare-config mapping, fidelity scoring, and a fidelity baseline per device
(:class:`diffbench.gate.baseline.FidelityBaseline`; CPU and CUDA numbers differ).

Loaded once per session and cached by key, so every benchmark of a session scores and times the
same objects (docs/pytest_plugin.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from diffbench.core.errors import InputError
from diffbench.core.system import System
from diffbench.gate.baseline import FidelityBaseline
from diffbench.io.config import SystemConfig, load_train_config, validate
from diffbench.measure.metrics import Judge
from diffbench.measure.scoring import Digits, load_digits, score_system
from diffbench.systems.translate import Translator
from diffbench.train import Distributed, Run, prepare_run

DIGITS = 64  # the fixed batch of real test digits; timed batches are its first 1, 16 or 64
FIDELITY_IMAGES = 32  # of which the first 32 are scored per (system, strength)
FIDELITY_KEYS = tuple(
    key for name in ("mse", "psnr", "ssim", "preservation", "noised_accuracy", "frechet_distance",
                     "kid")
    for key in (name, f"{name}_ci95")
)
BASELINE_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class BenchSettings:
    """What a session's env is built from (the plugin reads it off the pytest options).

    ``baselines`` maps each device to its fidelity baseline file; a missing file is recorded by
    the session, except the CPU one when ``require_cpu_baseline`` (fail closed, as CI wants).
    ``update_baseline`` records every checked case instead of checking it."""

    checkpoints: Path
    baselines: Mapping[str, Path]
    update_baseline: bool = False
    require_cpu_baseline: bool = False
    profile_dir: Path | None = None
    data_dir: str | None = None


class BenchEnv:
    """Shared by every benchmark of a session; see the module docstring."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.checkpoints = Path(settings.checkpoints)
        if not (self.checkpoints / "pixel.safetensors").is_file():
            raise InputError(f"no trained checkpoints in {self.checkpoints}: it lacks "
                             f"pixel.safetensors (--diffbench-checkpoints DIR)")
        self.data_dir = settings.data_dir
        self.profile_dir = settings.profile_dir
        self._baselines: dict[str, FidelityBaseline] = {}
        self._recording: set[str] = set()
        self._systems: dict[tuple, System] = {}
        self._judges: dict[str, Judge] = {}
        self._digits: dict[tuple[str, int], Digits] = {}
        self._fidelity: dict[tuple, dict[str, float]] = {}

    def judge(self, device: str) -> Judge:
        """The classifiers that score fidelity on ``device``, loaded once."""
        if device not in self._judges:
            self._judges[device] = Judge.from_checkpoints(self.checkpoints, device)
        return self._judges[device]

    def digits(self, device: str, count: int = DIGITS) -> Digits:
        """The first ``count`` real test digits, the same for every case."""
        if (device, count) not in self._digits:
            judge = self.judge(device)
            self._digits[device, count] = load_digits(judge, count, self.data_dir)
        return self._digits[device, count]

    def translator(self, space: str, sampler: str, steps: int, device: str, **options) -> System:
        """One system per (space, sampler, steps, device, options: compile, channels_last...)."""
        return self.system(SystemConfig(space=space, sampler=sampler, steps=steps), device,
                           **options)

    def system(self, config: SystemConfig | Mapping, device: str, **options) -> System:
        """The system a compare-config mapping names (registered or plug-in ``sampler``,
        optional plug-in ``model``), validated as ``diffbench compare`` does, loaded once."""
        if isinstance(config, Mapping):
            config = validate(SystemConfig, dict(config))
        elif not isinstance(config, SystemConfig):
            raise InputError(f"a system is {config!r}; allowed: a compare-config mapping such as "
                             f"{{'space': 'pixel', 'sampler': 'ddim', 'steps': 10}}")
        key = (config, device, *sorted(options.items()))
        if key not in self._systems:
            self._systems[key] = Translator.from_config(config, self.checkpoints, device,
                                                        **options)
        return self._systems[key]

    def train_run(
        self, kind: str, device: str, batch: int, overrides: list[str] = ()
    ) -> Run:
        """A fresh training run of ``kind`` (its shipped config, plus ``overrides``) on the
        first ``batch`` images."""
        overrides = [f"train_images={batch}", f"batch_size={batch}", f"device={device}",
                     f"vae_checkpoint={self.checkpoints / 'vae.safetensors'}", *overrides]
        if self.data_dir:
            overrides.append(f"data_dir={self.data_dir}")
        config = load_train_config(kind, overrides=overrides)
        return prepare_run(config, torch.device(device), Distributed(), resume=False,
                           command="bench")

    def fidelity(
        self, system: System, strength: float, device: str, count: int = FIDELITY_IMAGES
    ) -> dict[str, float]:
        """mse, psnr, ssim, preservation, noised accuracy (in the system's own space), Frechet
        distance and KID of one system at one strength, each with its 95% interval, on the
        first ``count`` test digits (scored once per session, shared by every batch size)."""
        key = (system.name, strength, device, count)
        if key not in self._fidelity:
            scored = self.digits(device, max(count, DIGITS)).first(count)
            row, _, _ = score_system(system, self.judge(device), scored, strength, seed=0)
            self._fidelity[key] = {k: row[k] for k in FIDELITY_KEYS}
        return self._fidelity[key]

    def baseline(self, device: str) -> FidelityBaseline:
        """The device's fidelity baseline. A file that does not exist yet is recorded by this
        session (but the CPU one when it is required), and every one with ``update_baseline``."""
        if device not in BASELINE_DEVICES:
            raise InputError(f"no fidelity baseline for device {device!r}; allowed: "
                             f"{', '.join(BASELINE_DEVICES)}")
        if device not in self._baselines:
            path = Path(self.settings.baselines[device])
            required = device == "cpu" and self.settings.require_cpu_baseline
            record = self.settings.update_baseline or (not path.exists() and not required)
            self._baselines[device] = FidelityBaseline(path, create=record)
            if record:
                self._recording.add(device)
        return self._baselines[device]

    def gate(self, case: str, measured: dict[str, float], device: str = "cpu") -> list[str]:
        """Check ``measured`` against the device's baseline (or record it, see ``baseline``)."""
        baseline = self.baseline(device)
        if device in self._recording:
            baseline.record(case, measured)
            return []
        return baseline.check(case, measured)

    def check_fidelity(
        self, system: System, strength: float, device: str = "cpu",
        count: int = FIDELITY_IMAGES, case: str | None = None,
    ) -> tuple[dict[str, float], list[str]]:
        """``system``'s fidelity at ``strength`` and its regressions against the baseline, under
        ``case`` (default ``<device>-<system name>-s<strength>``)."""
        measured = self.fidelity(system, strength, device, count)
        return measured, self.gate(case or f"{device}-{system.name}-s{strength}", measured,
                                   device)

    def save_baselines(self) -> list[Path]:
        """Write the baselines this session recorded."""
        return [self._baselines[device].save() for device in sorted(self._recording)]

    def profile(self, case: str, fn: Callable[[], object]) -> None:
        """With a profile folder, one more call of ``fn`` under torch.profiler (see
        :func:`profile_call`); without one, nothing."""
        if self.profile_dir is not None:
            profile_call(self.profile_dir / sanitize(case), fn)


def profile_call(folder: Path, fn: Callable[[], object]) -> None:
    """One call of ``fn`` under torch.profiler (the timed calls are never profiled), written to
    ``folder``: ``trace.pt.trace.json`` (Chrome trace format: open it in Perfetto,
    ui.perfetto.dev; the name also fits TensorBoard's profiler plugin) and
    ``key_averages.txt``, the profiler's table of operators by total time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    cuda = torch.cuda.is_available()
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        fn()
    prof.export_chrome_trace(str(folder / "trace.pt.trace.json"))
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    (folder / "key_averages.txt").write_text(table + "\n")


def sanitize(name: str) -> str:
    """A name MLflow and file systems accept: [ ] and the like become '/' or '_'."""
    return re.sub(r"[^\w\-./ ]", "_", name.replace("[", "/").rstrip("]"))
