"""What the benchmarks share: devices, the session's checkpoints, digits and classifiers."""

from __future__ import annotations

import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from diffbench.core.system import System, generator_for
from diffbench.gate.baseline import FidelityBaseline
from diffbench.io.config import SystemConfig, load_train_config
from diffbench.measure import paired
from diffbench.measure.memory import peak_memory
from diffbench.measure.metrics import Judge
from diffbench.measure.scoring import Digits, load_digits, score_system
from diffbench.measure.stats import percentiles
from diffbench.systems.translate import Translator
from diffbench.train import Distributed, Run, prepare_run

REPO = Path(__file__).resolve().parents[1]
DIGITS = 64  # the fixed batch of real test digits; timed batches are its first 1, 16 or 64
FIDELITY_IMAGES = 32  # of which the first 32 are scored per (system, strength)
MATCHED_IMAGES = 512  # digits behind a "matched fidelity" claim (one digit: 0.2 points)
SCORED_IMAGES = 256  # digits scored where a ratio compares preservation (one digit: 0.4 points)
STRENGTH = 0.3  # the ratio benches' image-to-image strength and batch
BATCH = 64
WARMUP = 1  # untimed calls before the timed rounds, for every system alike
FIDELITY_KEYS = tuple(
    key for name in ("mse", "psnr", "ssim", "preservation", "noised_accuracy", "frechet_distance",
                     "kid")
    for key in (name, f"{name}_ci95")
)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[CUDA, pytest.mark.cuda])]


class BenchEnv:
    """Shared by every benchmark of a session: checkpoints, digits, classifiers, and a fidelity
    baseline per device (CPU and CUDA numbers differ); a baseline file that does not exist yet
    is written from this session's numbers."""

    def __init__(self, config: pytest.Config) -> None:
        self.checkpoints = Path(config.getoption("--checkpoints"))
        if not (self.checkpoints / "pixel.safetensors").is_file():
            pytest.exit(f"no trained checkpoints in {self.checkpoints} (--checkpoints DIR)", 2)
        self.data_dir = os.environ.get("DIFFBENCH_DATA_DIR")
        self.update_baseline = config.getoption("--update-fidelity-baseline")
        self._baseline_paths = {"cpu": Path(config.getoption("--fidelity-baseline")),
                                "cuda": Path(config.getoption("--fidelity-baseline-cuda"))}
        self._baselines: dict[str, FidelityBaseline] = {}
        profile = config.getoption("--profile")
        self.profile_dir = Path(profile) if profile else None
        self._translators: dict[tuple, System] = {}
        self._judges: dict[str, Judge] = {}
        self._digits: dict[tuple[str, int], Digits] = {}
        self._fidelity: dict[tuple, dict[str, float]] = {}
        self._recording: set[str] = set()

    def judge(self, device: str) -> Judge:
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

    def system(self, config: SystemConfig, device: str, **options) -> System:
        """The system a compare-config mapping names (registered or plug-in), loaded once."""
        key = (config, device, *sorted(options.items()))
        if key not in self._translators:
            self._translators[key] = Translator.from_config(config, self.checkpoints, device,
                                                            **options)
        return self._translators[key]

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
        """The device's fidelity baseline. It must exist, except with --update-... and for
        CUDA the first time the CUDA cases run on a GPU, when this run records it."""
        if device not in self._baselines:
            path = self._baseline_paths[device]
            first_gpu_run = device == "cuda" and not path.exists()
            self._baselines[device] = FidelityBaseline(
                path, create=self.update_baseline or first_gpu_run)
            if self.update_baseline or first_gpu_run:
                self._recording.add(device)
        return self._baselines[device]

    def gate(self, case: str, measured: dict[str, float], device: str = "cpu") -> list[str]:
        """Check ``measured`` against the device's baseline (or record it, see ``baseline``)."""
        baseline = self.baseline(device)
        if device in self._recording:
            baseline.record(case, measured)
            return []
        return baseline.check(case, measured)

    def save_baselines(self) -> list[Path]:
        """Write the baselines this session recorded."""
        return [self._baselines[device].save() for device in sorted(self._recording)]

    def profile(self, case: str, fn) -> None:
        """One more call of ``fn`` under torch.profiler (the timed calls are never profiled),
        written to <dir>/<case>/: ``trace.pt.trace.json`` (Chrome trace format: open it in
        Perfetto, ui.perfetto.dev; the name also fits TensorBoard's profiler plugin) and
        ``key_averages.txt``, the profiler's table of operators by total time."""
        if self.profile_dir is None:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        cuda = torch.cuda.is_available()
        if cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        folder = self.profile_dir / sanitize(case)
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


def synchronized(fn, device: str):
    """``fn`` followed by a device sync, so the clock stops when the GPU is done."""
    if device != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def median_seconds(fn, device: str, repeats: int = 5) -> float:
    """Median wall seconds of ``fn`` (synchronised), after one warm-up call."""
    call = synchronized(fn, device)
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def pedantic_call(system: System, images, strength: float, device: str):
    """(target, setup) for ``benchmark.pedantic``: ``setup`` (untimed) makes a fresh generator
    seeded 0, as :func:`diffbench.measure.scoring.measure_latency` does before its clock starts;
    ``target`` calls the system on ``images`` (already on the device) and syncs the device."""

    def setup():
        return (), {"generator": generator_for(system, 0)}

    return synchronized_call(lambda generator: system(images, strength, generator=generator),
                             device), setup


def synchronized_call(fn, device: str):
    """``synchronized`` for a function of keyword arguments."""
    if device != "cuda":
        return fn

    def call(**kwargs):
        out = fn(**kwargs)
        torch.cuda.synchronize()
        return out

    return call


@dataclass
class SideBySide:
    """Two systems' seconds per image, from calls alternated in pairs: ``ratio`` is the median
    over pairs of ``other / timed`` (a speed-up of ``timed`` when above 1) with its 95%
    order-statistic interval (:func:`diffbench.measure.paired.median_interval`)."""

    timed_s: float
    other_s: float
    ratio: float
    ratio_ci95: list[float]
    pairs: int
    spread: dict[str, dict[int, float]]


def side_by_side(benchmark, bench_env, device, timed, other, rounds, seed=0,
                 strength=STRENGTH) -> SideBySide:
    """Seconds per image of ``timed`` (the benchmark itself) and ``other`` on the same ``BATCH``
    digits at ``strength`` (default ``STRENGTH``), their calls alternated: each round
    (``WARMUP`` untimed ones first)
    calls both, in an order drawn from ``random.Random(seed)``, so drift between rounds falls on
    both alike. Each is treated alike: the digits moved to the device once, before any clock;
    a fresh generator seeded 0 made outside the clock; the device synchronised before the clock
    stops. The ratio needs at least 6 rounds for its 95% interval."""
    images = bench_env.digits(device).images[:BATCH].to(device)
    benchmark.group = "ratios"
    target, setup_timed = pedantic_call(timed, images, strength, device)
    other_call = synchronized_call(
        lambda generator: other(images, strength, generator=generator), device)
    order, other_first, other_seconds = random.Random(seed), [], []

    def time_other():
        generator = generator_for(other, 0)
        start = time.perf_counter()
        other_call(generator=generator)
        other_seconds.append(time.perf_counter() - start)

    def setup():
        other_first.append(order.random() < 0.5)
        if other_first[-1]:
            time_other()
        return setup_timed()

    def teardown(**_):
        if not other_first[-1]:
            time_other()

    benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=rounds,
                       warmup_rounds=WARMUP, iterations=1)
    timed_seconds = list(benchmark.stats.stats.data)
    other_seconds = other_seconds[WARMUP:]
    ratios = paired.log_ratios(other_seconds, timed_seconds)
    lo, hi = paired.median_interval(ratios, level=0.95)
    per_image = {"timed": timed_seconds, "other": other_seconds}
    spread = {k: {q: v / len(images) for q, v in percentiles(times).items()}
              for k, times in per_image.items()}
    result = SideBySide(paired.median(timed_seconds) / len(images),
                        paired.median(other_seconds) / len(images),
                        math.exp(paired.median(ratios)), [math.exp(lo), math.exp(hi)],
                        len(ratios), spread)
    benchmark.extra_info.update(ratio=result.ratio, ratio_ci95=result.ratio_ci95,
                                pairs=result.pairs)
    return result


def latency_info(benchmark, batch: int) -> dict[str, float]:
    """Seconds per image at the 50th, 90th and 99th percentiles of the benchmark's rounds."""
    return {f"sec_per_image_p{q}": v / batch
            for q, v in percentiles(benchmark.stats.stats.data).items()}


def memory_info(system: System, images, strength: float, device: str) -> dict:
    """The peak memory of one more, untimed call (see :mod:`diffbench.measure.memory`)."""
    return peak_memory(lambda: system(images, strength, generator=generator_for(system, 0)),
                       device)


def report(benchmark, title: str, numbers: dict[str, float]) -> None:
    """Record ``numbers`` in the benchmark's extra_info and print them under ``title``."""
    benchmark.extra_info.update(numbers)
    lines = [f"{title}:"]
    for key, value in numbers.items():
        if key.endswith(("_ci95_lo", "_ci95_hi")):
            continue  # printed beside their ratio
        line = f"    {key} = {value:.4g}"
        if f"{key}_ci95_lo" in numbers:
            line += f" [{numbers[key + '_ci95_lo']:.4g}, {numbers[key + '_ci95_hi']:.4g}] (95%)"
        lines.append(line)
    print("\n" + "\n".join(lines))
