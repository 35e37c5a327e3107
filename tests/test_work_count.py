"""Work counts (bytecode, tensor operators, tensor elements) of one call: exact repeats of the
same code, each kind of extra work seen, the verdict at its limit."""

from __future__ import annotations

import pytest
import torch

from diffbench.gate import work_count


def step(x, extra_python=0, extra_op=False, size=8, dtype=torch.float32):
    y = torch.ones(size, dtype=dtype) * x
    for _ in range(extra_python):
        pass
    if extra_op:
        y = y + 1
    return y.sum()


def counts(**kwargs):
    return work_count.count(lambda: step(2.0, **kwargs), dict)


def test_the_same_call_counts_the_same_every_time():
    first = counts()
    assert first == counts() == counts()
    assert first["tensor_ops"] == 3  # ones, mul, sum: factories are dispatched too
    assert first["tensor_bytes"] == 4 * (8 + 8 + 1)  # float32
    assert first["python_instructions"] > 0


def test_each_kind_of_extra_work_is_seen():
    base = counts()
    assert counts(extra_python=50)["python_instructions"] > base["python_instructions"]
    more_ops = counts(extra_op=True)
    assert more_ops["tensor_ops"] == base["tensor_ops"] + 1
    assert counts(size=16)["tensor_bytes"] > base["tensor_bytes"]
    assert counts(dtype=torch.float64)["tensor_bytes"] == 2 * base["tensor_bytes"]


@pytest.mark.parametrize("head, expected", [
    ({"python_instructions": 1011, "tensor_ops": 100, "tensor_bytes": 100}, "slower"),
    ({"python_instructions": 1009, "tensor_ops": 100, "tensor_bytes": 100}, "same"),
    ({"python_instructions": 1000, "tensor_ops": 98, "tensor_bytes": 100}, "faster"),
    ({"python_instructions": 980, "tensor_ops": 102, "tensor_bytes": 100}, "slower"),
])
def test_verdict_at_its_limit(head, expected):
    base = {"python_instructions": 1000, "tensor_ops": 100, "tensor_bytes": 100}
    assert work_count.verdict(head, base)[0] == expected
