"""How well a VAE reconstructs real digits it never trained on: the held-out reconstruction
error and the evidence lower bound (ELBO) in bits per dimension.

The VAE trains on the negative ELBO with a Bernoulli likelihood (export/images/models.py):
a pixel x in [-1, 1] is the target t = (x + 1) / 2, and the decoder's output y = tanh(a)
gives the probability p = σ(2a) = (y + 1) / 2 (tanh(a) = 2σ(2a) − 1). So, per digit of D pixels,

    log p(x|z) = Σ_d t_d log p_d + (1 − t_d) log(1 − p_d)        (minus the training's BCE)
    KL(q(z|x) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)
    ELBO(x) = E_q[log p(x|z)] − KL,   estimated with one z ~ q(z|x) per digit (seeded)

and bits per dimension = −mean ELBO / (D ln 2): the training loss on held-out digits, per
pixel, in bits (lower is better). p comes from the graph's float32 output, which cannot tell a
probability within 2⁻²⁵ of 0 or 1 from 0 or 1 (|a| > 8.7): p is kept in [2⁻²⁵, 1 − 2⁻²⁵], so a
pixel the decoder is that sure of costs at most 17.3 nats. The reconstruction error is the mean
squared error per pixel, pixels scaled to [0, 1], of the decoded posterior mean.
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from .inputs import model_input

_SMALLEST_P = 2.0**-25  # half the float32 spacing below 1: p = (y + 1) / 2 for y one step below 1


def heldout_reconstruction(generator, images: np.ndarray, seed: int = 0) -> dict:
    """For a VAE with its encoder (an ImageGenerator) and real images uint8 (n, H, W, C):
    heldout_digits (n), reconstruction_mse, elbo_bits_per_dim (see the module's head)."""
    x = model_input(images, generator.image_shape)
    targets = (x.astype(np.float64) + 1.0) / 2.0  # (n, C, H, W) in [0, 1]
    mean, log_variance = generator.encode(x)
    reconstruction = (generator.decode_float(mean).astype(np.float64) + 1.0) / 2.0
    noise = ops.sample_latent(len(x), generator.latent_dim, seed, device=generator.device)  # ε of q(z|x), not the prior
    z = (mean + np.exp(0.5 * log_variance) * noise).astype(np.float32)
    p = np.clip((generator.decode_float(z).astype(np.float64) + 1.0) / 2.0, _SMALLEST_P, 1.0 - _SMALLEST_P)
    log_likelihood = (targets * np.log(p) + (1.0 - targets) * np.log1p(-p)).reshape(len(x), -1).sum(axis=1)
    mean64, log_variance64 = mean.astype(np.float64), log_variance.astype(np.float64)
    kl = 0.5 * (mean64**2 + np.exp(log_variance64) - 1.0 - log_variance64).sum(axis=1)
    dimensions = math.prod(generator.image_shape)
    return {"heldout_digits": len(x),
            "reconstruction_mse": float(((reconstruction - targets) ** 2).mean()),
            "elbo_bits_per_dim": float(-(log_likelihood - kl).mean() / (dimensions * math.log(2)))}
