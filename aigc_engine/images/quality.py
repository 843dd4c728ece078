"""Image quality, measured with the project's own MNIST digit classifier (shipped).

For a set of generated digits: the Fréchet distance between the classifier's
penultimate features of those digits and of the 5,000 real MNIST digits (lower is
better; the statistics of the real digits ship beside the classifier), how many of
the ten classes appear, the entropy of the predicted classes (log2(10) ≈ 3.32 bits
when balanced) and the classifier's mean confidence. For a VAE with its encoder, also how
well it reconstructs the 1,000 held-out real digits (reconstruction.py), which ship in the
reference file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..artifacts.artifact import read_artifact
from ..artifacts.registry import MODELS_DIR
from ..artifacts.schema import CLASSIFIER_INPUT, CLASSIFIER_OUTPUTS
from ..artifacts.session import create_session
from ..errors import AigcError

CLASSIFIER_PATH = MODELS_DIR / "digits-classifier.onnx"
REFERENCE_PATH = MODELS_DIR / "digits-reference.npz"
DIGIT_SHAPE = (1, 28, 28)


@dataclass
class QualityReport:
    n: int
    frechet_distance: float
    classes_present: int
    class_entropy_bits: float
    mean_confidence: float

    def as_dict(self) -> dict:
        return asdict(self)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) between two Gaussians.

    tr((Σ1 Σ2)^½) = Σ √λ over the eigenvalues of Σ1^½ Σ2 Σ1^½, which is symmetric
    positive semi-definite: two symmetric eigendecompositions instead of a general
    matrix square root, and no complex round-off.
    """
    w1, v1 = np.linalg.eigh(sigma1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
    middle = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def summarize(logits: np.ndarray, features: np.ndarray, reference_mu: np.ndarray,
              reference_sigma: np.ndarray) -> QualityReport:
    """Quality figures from the classifier's outputs on a set of images: at least one more
    image than features, or their covariance is singular and the distance meaningless."""
    n, size = features.shape
    if n <= size:
        raise AigcError(f"n: the Fréchet distance compares the covariance of the classifier's {size} features, "
                        f"which needs more samples than features: at least {size + 1}, got {n}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    counts = np.bincount(probs.argmax(axis=1), minlength=10)
    share = counts[counts > 0] / counts.sum()
    features = features.astype(np.float64)
    return QualityReport(
        n=int(len(logits)),
        frechet_distance=frechet_distance(features.mean(axis=0), np.cov(features, rowvar=False),
                                          reference_mu, reference_sigma),
        classes_present=int((counts > 0).sum()),
        class_entropy_bits=float((share * np.log2(1 / share)).sum()),  # one class: 0.0, not -0.0
        mean_confidence=float(probs.max(axis=1).mean()),
    )


class DigitClassifier:
    """The shipped classifier: uint8 digits (n, 28, 28, 1) → logits (n, 10), features (n, F)."""

    def __init__(self, num_threads: int | None = None):
        if not CLASSIFIER_PATH.is_file() or not REFERENCE_PATH.is_file():
            raise FileNotFoundError(f"the digit classifier is not installed ({CLASSIFIER_PATH})")
        self._session = create_session(read_artifact(CLASSIFIER_PATH, ("classifier",)).model,
                                       num_threads=num_threads)
        reference = np.load(REFERENCE_PATH)
        self.reference_mu = reference["mu"]
        self.reference_sigma = reference["sigma"]
        self.train_mu = reference["train_mu"]
        self.train_sigma = reference["train_sigma"]
        self.heldout_logits = reference["heldout_logits"]
        self.heldout_features = reference["heldout_features"]
        # uint8 (1000, 28, 28, 1), never trained on; absent from files older `aigc train classifier` wrote
        self.heldout_images = reference["heldout_images"] if "heldout_images" in reference else None

    def run(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Classify uint8 (n, 28, 28, 1) digits the way a viewer sees them (after rounding)."""
        logits, features = [], []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
            chunk_logits, chunk_features = self._session.run(list(CLASSIFIER_OUTPUTS), {CLASSIFIER_INPUT: chunk})
            logits.append(chunk_logits)
            features.append(chunk_features)
        return np.concatenate(logits), np.concatenate(features)

    def report(self, images: np.ndarray) -> QualityReport:
        logits, features = self.run(images)
        return summarize(logits, features, self.reference_mu, self.reference_sigma)

    def heldout_report(self) -> QualityReport:
        """The same figures for the real MNIST digits held out of every training run: the
        reference point. Their Fréchet distance is taken to the training split's statistics,
        which they are not part of (against all 5k it would be flattered by the overlap)."""
        return summarize(self.heldout_logits, self.heldout_features, self.train_mu, self.train_sigma)


def evaluate_model(model, n: int = 5000, seed: int = 0, truncation: float | None = None,
                   classifier: DigitClassifier | None = None) -> dict:
    """Quality figures of n samples of an image model (a name, a path or an ImageGenerator);
    a VAE with its encoder adds heldout_digits, reconstruction_mse and elbo_bits_per_dim (its
    posterior draws seeded by `seed` too)."""
    from .generator import ImageGenerator
    from .reconstruction import heldout_reconstruction

    generator = model if isinstance(model, ImageGenerator) else ImageGenerator.load(str(model))
    if generator.image_shape != DIGIT_SHAPE:
        raise AigcError(f"the digit classifier measures 1×28×28 digits; this model makes "
                        f"{'×'.join(map(str, generator.image_shape))} images")
    classifier = classifier or DigitClassifier()
    figures = classifier.report(generator.sample(n, seed, truncation)).as_dict()
    if generator.has_encoder:
        if classifier.heldout_images is None:
            raise AigcError(f"{REFERENCE_PATH} holds no held-out digit pixels ('heldout_images') to measure the VAE's "
                            "reconstruction on: write it again with `aigc train classifier`")
        figures.update(heldout_reconstruction(generator, classifier.heldout_images, seed))
    return figures
