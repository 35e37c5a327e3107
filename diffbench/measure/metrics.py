"""Fidelity of image-to-image outputs: pixel metrics, class preservation, Frechet distance, KID.

Images are [B, 1, 28, 28] in [-1, 1] (data range 2). Pixel metrics compare an output with its
source digit; the classifier metrics use the shipped MNIST classifiers:

* preservation: share of outputs the classifier assigns to the source digit's label;
* noised accuracy: a noise-aware classifier's accuracy on the noised inputs x_t themselves, in
  the system's own space (pixel x_t, or scaled VAE latents z_t with the latent noise-aware
  classifier), i.e. how much identity survived the noise. An estimate of what is left to
  preserve, not a bound: a deterministic sampler can exceed it;
* Frechet distance and KID between classifier features of the outputs and of held-out real
  digits, the MNIST classifier's penultimate layer in place of Inception
  (:mod:`diffbench.measure.feature_distance`: bias-corrected, with intervals that cover).

Every figure comes with a 95% interval (see :mod:`diffbench.measure.stats`): bootstrap over digits
for
mse, psnr and ssim, Wilson for shares, and :mod:`diffbench.measure.feature_distance`'s for the two
distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from diffbench.core.errors import InputError
from diffbench.io.checkpoints import load_model
from diffbench.measure.feature_distance import FeatureReference
from diffbench.measure.stats import bootstrap_mean_interval, share_interval, wilson_interval

DATA_RANGE = 2.0


def mse_per_image(output: Tensor, source: Tensor) -> Tensor:
    """Mean squared error of each image [B]."""
    return (output.float() - source.float()).pow(2).flatten(1).mean(1)


def psnr_per_image(output: Tensor, source: Tensor) -> Tensor:
    """Peak signal-to-noise ratio of each image in dB, 10 log10(range^2 / mse) [B]."""
    return 10 * torch.log10(DATA_RANGE**2 / mse_per_image(output, source).clamp_min(1e-10))


def ssim_per_image(output: Tensor, source: Tensor) -> Tensor:
    """Structural similarity of each image (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5),
    via torchmetrics [B]."""
    return structural_similarity_index_measure(
        output.float(), source.float(), data_range=DATA_RANGE, reduction="none"
    )


def mse(output: Tensor, source: Tensor) -> float:
    """Mean squared error over all pixels."""
    return float(mse_per_image(output, source).mean())


def psnr(output: Tensor, source: Tensor) -> float:
    """Peak signal-to-noise ratio in dB, averaged over images."""
    return float(psnr_per_image(output, source).mean())


def ssim(output: Tensor, source: Tensor) -> float:
    """Structural similarity, averaged over images."""
    return float(ssim_per_image(output, source).mean())


NOISY_CLASSIFIERS = {"pixel": "noisy_classifier", "latent": "latent_noisy_classifier"}
"""Space -> the checkpoint (without .safetensors) of its noise-aware classifier: pixel x_t
[B, 1, 28, 28], or scaled VAE latents z_t [B, 4, 7, 7] (see diffbench.core.system.to_latent)."""


def _optional_model(path: Path, device: str | torch.device) -> torch.nn.Module | None:
    return load_model(path, device)[0] if path.is_file() else None


@dataclass
class Judge:
    """The shipped classifiers, loaded once, turned into fidelity numbers."""

    classifier: torch.nn.Module
    noisy_classifier: torch.nn.Module | None
    device: torch.device
    batch_size: int = 500
    latent_noisy_classifier: torch.nn.Module | None = None

    @classmethod
    def from_checkpoints(cls, directory: str | Path, device: str | torch.device = "cpu") -> Judge:
        """classifier.safetensors, and each space's noise-aware classifier when present."""
        directory = Path(directory)
        classifier, _ = load_model(directory / "classifier.safetensors", device)
        noisy = {space: _optional_model(directory / f"{name}.safetensors", device)
                 for space, name in NOISY_CLASSIFIERS.items()}
        return cls(classifier, noisy["pixel"], torch.device(device),
                   latent_noisy_classifier=noisy["latent"])

    def noisy_classifier_for(self, space: str) -> torch.nn.Module | None:
        """The noise-aware classifier of ``space`` (None when its checkpoint is absent)."""
        if space not in NOISY_CLASSIFIERS:
            raise InputError(f"unknown space {space!r}; allowed: {', '.join(NOISY_CLASSIFIERS)}")
        return self.noisy_classifier if space == "pixel" else self.latent_noisy_classifier

    @torch.inference_mode()
    def _batched(self, fn, *tensors: Tensor) -> Tensor:
        chunks = zip(*(t.split(self.batch_size) for t in tensors))
        return torch.cat(
            [fn(*(c.to(self.device) for c in chunk)).float().cpu() for chunk in chunks]
        )

    def probabilities(self, images: Tensor) -> Tensor:
        return self._batched(lambda x: self.classifier(x).softmax(1), images)

    def features(self, images: Tensor) -> Tensor:
        return self._batched(self.classifier.features, images)

    def correct(self, images: Tensor, labels: Tensor) -> Tensor:
        """Per image: whether the classifier reads its label [B] (bool)."""
        return self.probabilities(images).argmax(1) == labels.cpu()

    def preservation(self, outputs: Tensor, labels: Tensor) -> float:
        return float(self.correct(outputs, labels).float().mean())

    def noised_correct(
        self, noised: Tensor, t: Tensor, labels: Tensor, space: str = "pixel"
    ) -> Tensor | None:
        """Per input: whether ``space``'s noise-aware classifier reads the label of x_t (at
        timesteps t) [B] (bool); None when that classifier is absent."""
        classifier = self.noisy_classifier_for(space)
        if classifier is None:
            return None
        return self._batched(classifier, noised, t).argmax(1) == labels.cpu()

    def noised_accuracy(
        self, noised: Tensor, t: Tensor, labels: Tensor, space: str = "pixel"
    ) -> float:
        """``space``'s noise-aware classifier's accuracy on the noised inputs x_t (NaN when that
        classifier is absent): how much identity survived the noise, an estimate."""
        flags = self.noised_correct(noised, t, labels, space)
        return float("nan") if flags is None else float(flags.float().mean())

    def per_digit(self, outputs: Tensor, sources: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Per output digit: mse, psnr, ssim and whether its label is preserved (``correct``)."""
        outputs, sources = outputs.cpu(), sources.cpu()
        return {
            "mse": mse_per_image(outputs, sources),
            "psnr": psnr_per_image(outputs, sources),
            "ssim": ssim_per_image(outputs, sources),
            "correct": self.correct(outputs, labels),
        }

    def score(
        self,
        outputs: Tensor,
        sources: Tensor,
        labels: Tensor,
        reference: FeatureReference | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, float | None | list[float]]:
        """mse, psnr, ssim, preservation and (given real digits' features, or their fitted
        :class:`FeatureReference`) frechet_distance and kid, each with its 95% interval
        (``<name>_ci95``) drawn from ``generator`` (default: seeded 0)."""
        return self.measure(outputs, sources, labels, reference, generator)[0]

    def measure(
        self,
        outputs: Tensor,
        sources: Tensor,
        labels: Tensor,
        reference: FeatureReference | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, float | None | list[float]], dict[str, Tensor]]:
        """:meth:`score`'s figures, and the per-digit values they come from (:meth:`per_digit`'s,
        plus, given a reference, each output's features on its principal components,
        ``features``, for paired Frechet differences): the classifier runs once."""
        generator = generator or torch.Generator().manual_seed(0)
        digits = self.per_digit(outputs, sources, labels)
        scores: dict[str, float | None | list[float]] = {}
        for name in ("mse", "psnr", "ssim"):
            scores[name] = float(digits[name].mean())
            scores[f"{name}_ci95"] = bootstrap_mean_interval(digits[name], generator)
        scores["preservation"] = float(digits["correct"].float().mean())
        scores["preservation_ci95"] = share_interval(digits["correct"])
        if reference is not None:
            if not isinstance(reference, FeatureReference):
                reference = FeatureReference(reference)
            features = self.features(outputs)
            scores.update(reference.score(features, generator))
            digits["features"] = reference.project(features).float()
        return scores, digits

    def generation_quality(
        self, samples: Tensor, confidence: float = 0.9
    ) -> dict[str, float | list[float]]:
        """For samples from pure noise: share classified with probability >= ``confidence``,
        and the smallest and largest share of any digit (1/10 each would be perfectly even),
        each with its Wilson interval (the extreme shares' intervals are those of the digit
        that turned out rarest or commonest, so they are a little optimistic)."""
        probs = self.probabilities(samples)
        counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1])
        confident = probs.max(1).values >= confidence
        n = len(samples)
        return {
            "confident_share": float(confident.float().mean()),
            "confident_share_ci95": share_interval(confident),
            "min_class_share": float(counts.min()) / n,
            "min_class_share_ci95": wilson_interval(int(counts.min()), n),
            "max_class_share": float(counts.max()) / n,
            "max_class_share_ci95": wilson_interval(int(counts.max()), n),
        }
