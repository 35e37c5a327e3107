"""Runtime: the device, the seed bounds, the process group, a device-synchronised clock, where
noise is drawn, and the TF32 switch. Imported by every job, without importing training.

* ``init_distributed`` binds a CUDA process to its GPU (``torch.cuda.set_device``) *before*
  ``init_process_group("nccl")``, as PyTorch's DDP tutorial and NCCL require (otherwise every
  rank's communicator lands on GPU 0).
* ``synchronize`` waits for the device, so a clock read after it counts the GPU's work too
  (CUDA kernels run asynchronously to the Python that launched them).
* ``noise_generator`` makes the ``torch.Generator`` every random draw of an image-to-image
  call takes: on the compute device (``noise_device="device"``, the default: no host-to-device
  copy of the noise) or on the CPU (``"cpu"``: the same noise as a CPU run, whatever the
  device). On a CPU device both are the same generator.
* ``tf32_mode`` allows TensorFloat-32 in CUDA matmuls and cuDNN convolutions for the duration of a
  call (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# COMPILE_MODES and MAX_SEED are imported from here too (configs); they live in choices.
from diffbench.core.choices import COMPILE_MODES as COMPILE_MODES
from diffbench.core.choices import DEVICES, NOISE_DEVICES
from diffbench.core.choices import MAX_SEED as MAX_SEED
from diffbench.core.errors import InputError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ValueError."""
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}; allowed: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "device 'cuda' was asked for but no CUDA device is available; allowed here: cpu, auto"
        )
    return torch.device(name)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group if there is one (gloo on CPU, nccl on CUDA) and return
    it with this process's device: on CUDA ``cuda:LOCAL_RANK``, made current before the group
    is created."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if world_size > 1 else device.index or 0)
        torch.cuda.set_device(device)
    if world_size == 1:
        return Distributed(), device
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return Distributed(dist.get_rank(), world_size, local_rank), device


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has finished its queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str | torch.device) -> tuple[float, Any]:
    """(wall seconds, result) of ``fn()``, the device synchronised before the clock starts and
    before it stops."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def check_noise_device(noise_device: str) -> None:
    if noise_device not in NOISE_DEVICES:
        raise InputError(
            f"unknown noise_device {noise_device!r}; allowed: {', '.join(NOISE_DEVICES)}"
        )


def noise_generator(seed: int, device: torch.device | str, noise_device: str) -> torch.Generator:
    """A generator seeded with ``seed`` on ``device`` (``noise_device="device"``) or on the CPU
    (``"cpu"``)."""
    check_noise_device(noise_device)
    where = torch.device(device) if noise_device == "device" else torch.device("cpu")
    return torch.Generator(where).manual_seed(seed)


def check_tf32(tf32: bool, device: torch.device | str) -> None:
    if not isinstance(tf32, bool) or (tf32 and torch.device(device).type != "cuda"):
        raise InputError(
            f"tf32={tf32!r} on device {str(device)!r}; allowed: False, or True on a CUDA device"
        )


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """TF32 in CUDA matmuls and cuDNN convolutions on (``enabled``) or off (IEEE fp32, closest
    to the CPU's numbers) inside the block; the previous settings come back after it."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    previous = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = previous
