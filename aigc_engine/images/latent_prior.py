"""The distribution an image model's latents are drawn from when it samples.

A GAN's latents, and a VAE's by default, are standard normal. A VAE trained with a
standard-normal prior does not fill it: its posterior means cluster (on the shipped digits
each posterior's variance is ~0.015 against a spread of ~1 of the means), so decoding
N(0, I) draws often lands between the clusters, where the decoder draws blurred, ambiguous
digits. A VAE file may therefore carry, in its config's `latent_prior`, a Gaussian mixture
fitted after training to the posterior means of its training images (ex-post density
estimation, Ghosh et al. 2020), and its samples draw from that:

    z = means[k] + scale_tril[k] · ε,   k ~ weights,   ε ~ N(0, I)

Sample i of a seed stays a pure function of (seed, i): ε is latent sample i's first
latent_dim elements (truncated when asked: truncation then draws closer to each component's
mean), and k comes from element latent_dim of the same sample, never truncated: it is cut
at the normal quantiles of the cumulative weights, so P(k) = weights[k] exactly.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from .. import ops
from ..errors import ModelFileError

MIXTURE = "gaussian_mixture"
_WEIGHT_SUM_TOLERANCE = 1e-6


class MixturePrior:
    """Σ_k weights[k] · N(means[k], scale_tril[k] scale_tril[k]ᵀ) over R^d, drawn per sample index."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, scale_tril: np.ndarray):
        self.weights = weights        # (K,), positive, summing to 1
        self.means = means            # (K, d)
        self.scale_tril = scale_tril  # (K, d, d), lower triangular, positive diagonal
        # Element d of a sample's standard normals below cuts[k] (and at or above cuts[k - 1])
        # picks component k; the last cut is +inf, so rounding never leaves a draw unassigned.
        quantiles = [NormalDist().inv_cdf(min(max(c, 1e-300), 1 - 1e-16)) for c in np.cumsum(weights)[:-1]]
        self._cuts = np.array([*quantiles, math.inf])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def components(self, selectors: np.ndarray) -> np.ndarray:
        """int (n,): the component each standard-normal selector picks."""
        return np.searchsorted(self._cuts, selectors, side="right")

    def draw(self, n: int, seed: int, first_index: int = 0, truncation: float | None = None,
             device: str = "cpu") -> np.ndarray:
        """float32 (n, d): samples first_index … first_index + n − 1 of `seed`."""
        normals = ops.sample_latent(n, self.dim + 1, seed, first_index=first_index, device=device)
        selectors = normals[:, self.dim]  # never truncated
        noise = normals[:, :self.dim] if truncation is None else ops.sample_latent(
            n, self.dim, seed, first_index=first_index, truncation=truncation, device=device)
        k = self.components(selectors)
        z = self.means[k] + np.einsum("nij,nj->ni", self.scale_tril[k], noise.astype(np.float64))
        return z.astype(np.float32)


def latent_prior(config: dict, path) -> MixturePrior | None:
    """The mixture a model file's config carries under 'latent_prior', checked; None when it
    has none (standard-normal latents). ModelFileError names what is wrong in a bad one."""
    spec = config.get("latent_prior")
    if spec is None:
        return None
    where = f"{path}: config 'latent_prior'"
    if not isinstance(spec, dict) or spec.get("kind") != MIXTURE:
        raise ModelFileError(f"{where}: expected an object with kind '{MIXTURE}', weights, means and scale_tril")
    arrays = {}
    for key in ("weights", "means", "scale_tril"):
        try:
            arrays[key] = np.array(spec.get(key), dtype=np.float64)
        except (TypeError, ValueError):
            raise ModelFileError(f"{where}: '{key}' is not an array of numbers") from None
        if arrays[key].dtype != np.float64 or not np.isfinite(arrays[key]).all():
            raise ModelFileError(f"{where}: '{key}' holds values that are not finite numbers")
    weights, means, scale_tril = arrays["weights"], arrays["means"], arrays["scale_tril"]
    k, d = len(weights), config["latent_dim"]
    if weights.ndim != 1 or k < 1:
        raise ModelFileError(f"{where}: 'weights' must be a non-empty list, got shape {weights.shape}")
    if means.shape != (k, d) or scale_tril.shape != (k, d, d):
        raise ModelFileError(f"{where}: {k} components of latent_dim {d} need 'means' ({k}, {d}) and 'scale_tril' "
                             f"({k}, {d}, {d}), got {means.shape} and {scale_tril.shape}")
    if (weights <= 0).any() or abs(weights.sum() - 1.0) > _WEIGHT_SUM_TOLERANCE:
        raise ModelFileError(f"{where}: 'weights' must be positive and sum to 1, got sum {weights.sum():.9g} "
                             f"and smallest {weights.min():.3g}")
    diagonals = np.diagonal(scale_tril, axis1=1, axis2=2)
    if np.triu(scale_tril, 1).any() or (diagonals <= 0).any():
        raise ModelFileError(f"{where}: each 'scale_tril' must be lower triangular with a positive diagonal "
                             "(the Cholesky factor of a covariance)")
    return MixturePrior(weights, means, scale_tril)
