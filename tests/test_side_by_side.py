"""A side-by-side measurement (benches/benchlib.py) treats its two systems identically: the same
digits, copied to the device once before any clock, the same warm-up and timed calls, a fresh
generator with the same seed per call, and calls alternated in pairs in both orders. Checked
with two recording fake systems; no timing is asserted."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from diffbench.measure.scoring import Digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
import benchlib  # noqa: E402  (benches/ is not a package)


@dataclass
class Recorder:
    """A fake System that records, per call, what it was given and how many tensor copies
    (``Tensor.to``) had been made so far."""

    copies: list[int]
    sequence: list[str]
    name: str = "fake"
    device: torch.device = torch.device("cpu")
    calls: list[dict] = field(default_factory=list)

    def __call__(self, x0, strength, generator=None):
        self.calls.append({"x0": x0.data_ptr(), "device": x0.device, "strength": strength,
                           "seed": generator.initial_seed(), "generator": id(generator),
                           "copies": self.copies[0]})
        self.sequence.append(self.name)
        return x0


def test_side_by_side_gives_both_systems_the_same_treatment(benchmark, monkeypatch):
    copies = [0]
    to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        copies[0] += 1
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    images = torch.zeros(benchlib.BATCH, 1, 28, 28)
    env = SimpleNamespace(digits=lambda device: Digits(images, torch.zeros(len(images)), None))
    sequence: list[str] = []
    first, second = Recorder(copies, sequence, "first"), Recorder(copies, sequence, "second")
    rounds = 8
    result = benchlib.side_by_side(benchmark, env, "cpu", first, second, rounds)

    assert benchmark.stats.stats.rounds == rounds
    pairs = [tuple(sequence[i:i + 2]) for i in range(0, len(sequence), 2)]
    assert len(pairs) == benchlib.WARMUP + rounds
    assert all(set(pair) == {"first", "second"} for pair in pairs)  # alternated, pair by pair
    assert {pair[0] for pair in pairs} == {"first", "second"}  # in both orders
    assert result.pairs == rounds and result.ratio_ci95[0] <= result.ratio <= result.ratio_ci95[1]
    assert benchmark.extra_info["ratio_ci95"] == result.ratio_ci95
    for system in (first, second):
        calls = system.calls
        assert len(calls) == benchlib.WARMUP + rounds
        assert {c["x0"] for c in calls} == {images.data_ptr()}  # the same digits, not copies
        assert {c["strength"] for c in calls} == {benchlib.STRENGTH}
        assert {c["seed"] for c in calls} == {0}
        assert {c["device"] for c in calls} == {torch.device("cpu")}
        # no tensor copy between a system's first and last call: inputs were ready before
        assert calls[0]["copies"] == calls[-1]["copies"]
    assert len(first.calls) == len(second.calls)
