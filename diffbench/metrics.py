"""Fidelity of image-to-image outputs: pixel metrics, class preservation, Frechet distance.

Images are [B, 1, 28, 28] in [-1, 1] (data range 2). Pixel metrics compare an output with its
source digit; the classifier metrics use the shipped MNIST classifiers:

* preservation: share of outputs the classifier assigns to the source digit's label;
* preservation ceiling: a noise-aware classifier's accuracy on the noised inputs x_t themselves,
  i.e. how much identity survived the noise (no sampler can be expected to beat it);
* Frechet distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule") between
  Gaussians fitted to classifier features of outputs and of held-out real digits, with the MNIST
  classifier's penultimate layer in place of Inception.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from diffbench.checkpoints import load_model

DATA_RANGE = 2.0


def mse(output: Tensor, source: Tensor) -> float:
    """Mean squared error over all pixels."""
    return float((output.float() - source.float()).pow(2).mean())


def psnr(output: Tensor, source: Tensor) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(range^2 / mse), averaged over images."""
    per_image = (output.float() - source.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(DATA_RANGE**2 / per_image)).mean())


def ssim(output: Tensor, source: Tensor) -> float:
    """Structural similarity (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5), via
    torchmetrics, averaged over images."""
    return float(
        structural_similarity_index_measure(output.float(), source.float(), data_range=DATA_RANGE)
    )


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits, in float64.

    Tr((S_a S_b)^(1/2)) is the sum of square roots of the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2), which is symmetric, so ``eigh`` suffices.
    """
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    distance = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return float(distance.clamp_min(0))


@dataclass
class Judge:
    """The shipped classifiers, loaded once, turned into fidelity numbers."""

    classifier: torch.nn.Module
    noisy_classifier: torch.nn.Module | None
    device: torch.device
    batch_size: int = 500

    @classmethod
    def from_checkpoints(cls, directory: str | Path, device: str | torch.device = "cpu") -> Judge:
        directory = Path(directory)
        classifier, _ = load_model(directory / "classifier.safetensors", device)
        noisy_path = directory / "noisy_classifier.safetensors"
        noisy = load_model(noisy_path, device)[0] if noisy_path.is_file() else None
        return cls(classifier, noisy, torch.device(device))

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

    def preservation(self, outputs: Tensor, labels: Tensor) -> float:
        return float((self.probabilities(outputs).argmax(1) == labels.cpu()).float().mean())

    def preservation_ceiling(self, noised: Tensor, t: Tensor, labels: Tensor) -> float:
        """The noise-aware classifier's accuracy on the noised inputs x_t (at timesteps t)."""
        if self.noisy_classifier is None:
            return float("nan")
        logits = self._batched(self.noisy_classifier, noised, t)
        return float((logits.argmax(1) == labels.cpu()).float().mean())

    def score(
        self,
        outputs: Tensor,
        sources: Tensor,
        labels: Tensor,
        reference_features: Tensor | None = None,
    ) -> dict[str, float]:
        """mse, psnr, ssim, preservation and (given real-digit features) frechet_distance."""
        outputs, sources = outputs.cpu(), sources.cpu()
        scores = {
            "mse": mse(outputs, sources),
            "psnr": psnr(outputs, sources),
            "ssim": ssim(outputs, sources),
            "preservation": self.preservation(outputs, labels),
        }
        if reference_features is not None:
            features = self.features(outputs)
            scores["frechet_distance"] = frechet_distance(features, reference_features)
        return scores

    def generation_quality(self, samples: Tensor, confidence: float = 0.9) -> dict[str, float]:
        """For samples from pure noise: share classified with probability >= ``confidence``,
        and the smallest and largest share of any digit (1/10 each would be perfectly even)."""
        probs = self.probabilities(samples)
        shares = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float() / len(samples)
        return {
            "confident_share": float((probs.max(1).values >= confidence).float().mean()),
            "min_class_share": float(shares.min()),
            "max_class_share": float(shares.max()),
        }
