"""The peer system: a diffusers ``UNet2DModel`` driven by diffusers' ``DDIMScheduler``.

What a user would write instead of diffbench, following diffusers' img2img pipelines: pad the
digits to 32x32, ``scheduler.set_timesteps(n)``, pick the img2img timesteps,
``scheduler.add_noise`` at the first of them, then ``unet(x, t).sample`` and
``scheduler.step(...).prev_sample`` per step; crop back to 28x28.

Which timesteps: ``start="exact"`` (the default, as
:class:`~diffbench.systems.translate.Translator`'s)
starts at exactly ``int(strength * T) - 1`` and takes ``int(n * strength)`` steps of the
scheduler's stride ``T // n`` (299, 279, ..., 19 for DDIM-50 at 0.3), so the peer and diffbench
start from the same noise; ``DDIMScheduler.step`` steps each by that stride, so the exact grid
must be evenly spaced by it (true wherever ``strength * n`` is a whole number). ``"diffusers"``
keeps the pipelines' last ``min(int(n * strength), n)`` of the scheduler's timesteps. Both come
from diffbench's own DDIM plan (:meth:`PeerTranslator.plan`), whose timesteps equal the
scheduler's. A
:class:`diffbench.core.system.System` like :class:`diffbench.systems.translate.Translator`, so the
same code times and scores both. Needs the optional ``diffusers`` dependency
(``pip install diffbench[parity]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.core.files import sha256_file
from diffbench.core.plan import Plan
from diffbench.core.system import check_digits
from diffbench.io.checkpoints import load_model, require_metadata
from diffbench.models import PeerUNet, flops_per_image
from diffbench.models.peer import crop_from_peer, pad_to_peer
from diffbench.sampling import DEFAULT_STEPS, DDIMSampler, check_start
from diffbench.sampling.schedule import NoiseSchedule


class PeerTranslator:
    """``peer(x0, strength, generator=None) -> x``: a :class:`~diffbench.core.system.System`."""

    space = "pixel"
    sampler_name = "diffusers-ddim"

    def __init__(
        self,
        unet: PeerUNet,
        schedule: dict[str, Any],
        num_steps: int = DEFAULT_STEPS,
        device: str | torch.device = "cpu",
        facts: dict[str, Any] | None = None,
        channels_last: bool = False,
        checkpoint: str | Path | None = None,
        start: str = "exact",
    ) -> None:
        """``channels_last``: a lever diffusers users rarely pull on CPU, off by default; the
        benches also time the peer with it, to tell layout from architecture. ``start``: where
        img2img starts (``"exact"`` or ``"diffusers"``, see the module docstring)."""
        from diffusers import DDIMScheduler

        if schedule["name"] != "linear":
            raise InputError(f"the peer runs the linear schedule only, not {schedule['name']!r}")
        check_start(start)
        self.start = start
        self.num_steps = num_steps
        self.unet = unet.to(memory_format=torch.channels_last) if channels_last else unet
        self.device = torch.device(device)
        # diffusers' defaults: linear betas 1e-4..0.02, clip_sample=True, leading spacing.
        self.scheduler = DDIMScheduler(num_train_timesteps=schedule["num_timesteps"])
        self.scheduler.set_timesteps(num_steps, device=self.device)
        self._ddim = DDIMSampler(NoiseSchedule.linear(schedule["num_timesteps"]), num_steps)
        self.facts = facts or {}
        self._checkpoint = Path(checkpoint) if checkpoint is not None else None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path = "fixtures/checkpoints/peer.safetensors",
        num_steps: int = DEFAULT_STEPS,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        start: str = "exact",
    ) -> PeerTranslator:
        unet, metadata = load_model(path, device)
        require_metadata(path, metadata, "train_seconds", "stats", "schedule")
        if not isinstance(unet, PeerUNet):
            raise InputError(f"{path} holds a {type(unet).__name__}, not the diffusers peer")
        facts = {"train_seconds": metadata["train_seconds"],
                 "train_cpu_seconds": metadata.get("cpu_seconds"),
                 "unet_parameters": metadata["stats"]["parameters"], "vae_parameters": 0}
        return cls(unet, metadata["schedule"], num_steps, device, facts, channels_last, path,
                   start)

    @property
    def name(self) -> str:
        return f"diffusers-DDIM-{self.num_steps}"

    def plan(self, strength: float) -> Plan:
        """The plan of img2img at ``strength``: diffbench's DDIM plan on the same schedule, step
        count and (leading) spacing as the scheduler, whose timesteps equal diffusers' (tested);
        an error where an exact start is not evenly spaced by the stride ``T // n`` that
        ``DDIMScheduler.step`` steps by."""
        plan = self._ddim.plan(strength, self.start)
        stride = self._ddim.schedule.num_timesteps // self.num_steps
        if self.start == "exact" and plan.start_timestep + 1 != plan.steps * stride:
            raise InputError(
                f"the peer's exact start at strength {strength!r} with {self.num_steps} steps is "
                f"not a grid of DDIMScheduler's stride {stride}: use a strength that is a "
                f"multiple of 1/{self.num_steps}, or start='diffusers'"
            )
        return plan

    def add_noise(self, x0: Tensor, noise: Tensor, t: int) -> Tensor:
        """The scheduler's own forward process (diffusers' ``add_noise``)."""
        return self.scheduler.add_noise(x0, noise, torch.tensor([t], device=x0.device))

    def checkpoint_sha256(self) -> dict[str, str]:
        path = self._checkpoint
        return {path.name: sha256_file(path)} if path is not None else {}

    def flops_per_image(self, strength: float) -> int:
        """Forward FLOPs of one translation: the UNet once per step, at 32x32."""
        x = torch.zeros(1, 1, 32, 32, device=self.device)
        t = torch.zeros(1, dtype=torch.long, device=self.device)
        return self.plan(strength).nfe * flops_per_image(self.unet, x, t)

    @torch.inference_mode()
    def __call__(
        self, x0: Tensor, strength: float, generator: torch.Generator | None = None
    ) -> Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        check_digits(x0)
        timesteps = self.plan(strength).timesteps.to(self.device)
        x0 = pad_to_peer(x0.to(self.device))
        noise = randn_tensor(x0.shape, generator=generator, device=self.device, dtype=x0.dtype)
        x = self.scheduler.add_noise(x0, noise, timesteps[:1])
        for t in timesteps:
            eps = self.unet.unet(x, t).sample
            x = self.scheduler.step(eps, t, x).prev_sample
        return crop_from_peer(x).clamp(-1, 1)
