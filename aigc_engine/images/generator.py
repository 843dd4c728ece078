"""ImageGenerator: batched, seeded sampling from an exported GAN, DCGAN or VAE decoder, and
a VAE's encoder: real images → the posterior q(z|x), reconstructions, interpolation.

The generator graph runs in onnxruntime; the latents are drawn by the native
counter-based sampler (sample i of seed s is the same whatever n, batch size or
chunking) and the output becomes uint8 (n, H, W, C) in C++, chunk by chunk, straight
into one preallocated array. A VAE file's graph holds two independent paths, z → images
and input_images → (mean, log_variance); each runs as a session of its own, cut from the
graph at load, so neither path costs the other anything.
"""

from __future__ import annotations

import math

import numpy as np
import onnx.utils

from .. import ops
from ..artifacts.artifact import (
    IMAGE_FAMILIES,
    Artifact,
    has_vae_encoder,
    read_artifact,
)
from ..artifacts.registry import resolve
from ..artifacts.schema import (
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    VAE_ENCODER_INPUT,
    VAE_ENCODER_OUTPUTS,
)
from ..artifacts.session import create_session
from ..errors import AigcError
from . import memory
from .inputs import model_input
from .latent_prior import latent_prior

DEFAULT_BATCH_SIZE = 128
BACKENDS = ("onnxruntime",)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AigcError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


class ImageGenerator:
    def __init__(self, artifact: Artifact, backend: str = "onnxruntime", device: str = "cpu",
                 num_threads: int | None = None):
        if backend not in BACKENDS:
            raise AigcError(f"backend: image models run on {', '.join(BACKENDS)}, got {backend!r}")
        if device not in ops.DEVICES:
            raise AigcError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        self.artifact = artifact
        self.device = device
        # None: standard-normal latents; a VAE may carry a fitted mixture (latent_prior.py)
        self.prior = latent_prior(artifact.config, artifact.path)
        self._encoder = None
        if has_vae_encoder(artifact):
            paths = onnx.utils.Extractor(artifact.model)
            self._session = create_session(paths.extract_model([IMAGE_INPUT], [IMAGE_OUTPUT]), device, num_threads)
            self._encoder = create_session(paths.extract_model([VAE_ENCODER_INPUT], list(VAE_ENCODER_OUTPUTS)),
                                           device, num_threads)
        else:
            self._session = create_session(artifact.model, device, num_threads)

    @classmethod
    def load(cls, name_or_path: str, backend: str = "onnxruntime", device: str = "cpu",
             num_threads: int | None = None) -> "ImageGenerator":
        """An embedded model by name (`aigc models`) or a path to an exported .onnx file."""
        return cls(read_artifact(resolve(name_or_path), IMAGE_FAMILIES), backend, device, num_threads)

    @property
    def family(self) -> str:
        return self.artifact.family

    @property
    def latent_dim(self) -> int:
        return self.artifact.config["latent_dim"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        c = self.artifact.config
        return c["channels"], c["height"], c["width"]

    def __repr__(self) -> str:
        return f"ImageGenerator({self.artifact.path.name!r}, family={self.family!r}, device={self.device!r})"

    # Latents ------------------------------------------------------------------------

    def latents(self, n: int, seed: int = 0, truncation: float | None = None, first_index: int = 0) -> np.ndarray:
        """float32 (n, latent_dim): samples first_index … first_index + n - 1 of `seed`."""
        n = _check_count("n", n)
        memory.check_fits(f"n={n} latents", n * self.latent_dim * 4)
        return self._draw(n, seed, truncation, first_index)

    def _draw(self, n: int, seed: int, truncation: float | None, first_index: int = 0) -> np.ndarray:
        # latents from the model's prior: standard normal, or the file's mixture
        if self.prior is not None:
            return self.prior.draw(n, seed, first_index, truncation, self.device)
        return self._standard_normal(n, seed, truncation, first_index)

    def _standard_normal(self, n: int, seed: int, truncation: float | None = None, first_index: int = 0) -> np.ndarray:
        return ops.sample_latent(n, self.latent_dim, seed, first_index=first_index,
                                 truncation=truncation, device=self.device)

    def interpolation_latents(self, seed_a: int, seed_b: int, n: int, truncation: float | None = None) -> np.ndarray:
        """float32 (n, latent_dim) from sample 0 of seed_a to sample 0 of seed_b: on the great
        circle between them for standard-normal latents (which keeps a Gaussian draw's typical
        norm), on the straight line for a mixture prior (whose draws have no common centre)."""
        n = _check_count("n", n)
        a = self.latents(1, seed_a, truncation)[0]
        b = self.latents(1, seed_b, truncation)[0]
        t = np.linspace(0.0, 1.0, n, dtype=np.float32) if n > 1 else np.zeros(1, np.float32)
        if self.prior is not None:
            return ((1 - t[:, None]) * a + t[:, None] * b).astype(np.float32)
        return ops.slerp(a, b, t)

    # Images -------------------------------------------------------------------------

    def decode(self, z: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Latents float32 (n, latent_dim) → uint8 images (n, H, W, C), run in chunks."""
        z = self._check_latents(z)
        batch_size = _check_count("batch_size", batch_size)
        self._check_memory(z.shape[0], batch_size, latent_bytes=0)
        return self._decode(z, batch_size)

    def decode_float(self, z: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Latents float32 (n, latent_dim) → the graph's own output, float32 (n, C, H, W) in
        [-1, 1], before decode() rounds it to uint8 (for measurements: errors, likelihoods)."""
        z = self._check_latents(z)
        batch_size = _check_count("batch_size", batch_size)
        memory.check_fits(f"n={len(z)} float images", len(z) * math.prod(self.image_shape) * 4)
        out = np.empty((len(z), *self.image_shape), np.float32)
        for start in range(0, len(z), batch_size):
            stop = min(len(z), start + batch_size)
            (out[start:stop],) = self._session.run([IMAGE_OUTPUT], {IMAGE_INPUT: np.ascontiguousarray(z[start:stop])})
        return out

    def _check_latents(self, z) -> np.ndarray:
        z = np.asarray(z)
        if z.dtype != np.float32 or z.ndim != 2 or z.shape[1] != self.latent_dim or z.shape[0] < 1:
            raise AigcError(f"z: expected float32 (n, {self.latent_dim}) with n >= 1, got {z.dtype} {z.shape}")
        return z

    def _check_memory(self, n: int, batch_size: int, latent_bytes: int) -> None:
        """The uint8 output, one chunk of the graph's float32 output, and the latents if drawn here.
        Checked once per request: each check reads /proc/meminfo."""
        c, h, w = self.image_shape
        memory.check_fits(f"n={n} images of {c}×{h}×{w}",
                          n * c * h * w + min(n, batch_size) * c * h * w * 4 + latent_bytes)

    def _decode(self, z: np.ndarray, batch_size: int) -> np.ndarray:
        n = z.shape[0]
        c, h, w = self.image_shape
        out = np.empty((n, h, w, c), dtype=np.uint8)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            (images,) = self._session.run([IMAGE_OUTPUT], {IMAGE_INPUT: np.ascontiguousarray(z[start:stop])})
            ops.images_to_uint8(images, device=self.device, out=out[start:stop])
        return out

    def sample(self, n: int, seed: int = 0, truncation: float | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """n images of `seed`: uint8 (n, H, W, C). Image i is the same whatever n or batch_size."""
        n = _check_count("n", n)
        batch_size = _check_count("batch_size", batch_size)
        self._check_memory(n, batch_size, latent_bytes=n * self.latent_dim * 4)
        return self._decode(self._draw(n, seed, truncation), batch_size)

    def interpolate(self, seed_a: int, seed_b: int, n: int = 8, truncation: float | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """n images morphing from image 0 of seed_a to image 0 of seed_b: uint8 (n, H, W, C)."""
        return self.decode(self.interpolation_latents(seed_a, seed_b, n, truncation), batch_size)

    # A VAE's encoder --------------------------------------------------------------------

    @property
    def has_encoder(self) -> bool:
        """Whether encode, reconstruct and interpolate_images work: a VAE file with its encoder."""
        return self._encoder is not None

    def encode(self, images, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """Real images → the VAE's posterior q(z|x) = N(mean, exp(log_variance)): two float32
        (n, latent_dim) arrays. images: float (n, C, H, W) in [-1, 1], or 8-bit pixels
        (n, H, W[, c]) or one image (H, W[, c]) — what sample() returns or an image file holds
        (see images/inputs.py for every form and how colour and alpha convert)."""
        encoder = self._check_encoder("encode")
        batch_size = _check_count("batch_size", batch_size)
        x = model_input(images, self.image_shape)
        memory.check_fits(f"encoding {len(x)} images", 2 * len(x) * self.latent_dim * 4)
        mean = np.empty((len(x), self.latent_dim), np.float32)
        log_variance = np.empty_like(mean)
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            mean[start:start + len(chunk)], log_variance[start:start + len(chunk)] = encoder.run(
                list(VAE_ENCODER_OUTPUTS), {VAE_ENCODER_INPUT: chunk})
        return mean, log_variance

    def posterior_latents(self, images, seed: int | None = None,
                          batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """float32 (n, latent_dim): z for each image — its posterior mean when seed is None, else
        the draw mean + exp(log_variance / 2) · ε, ε being standard-normal sample i of `seed` (the
        counter-based normals sample() uses, so image i's z never depends on n or batch_size)."""
        mean, log_variance = self.encode(images, batch_size)
        if seed is None:
            return mean
        noise = self._standard_normal(len(mean), seed)
        return (mean + np.exp(0.5 * log_variance) * noise).astype(np.float32)

    def reconstruct(self, images, seed: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Encode, then decode: uint8 (n, H, W, C). seed None decodes each posterior mean (the
        most likely reconstruction, deterministic); a seed decodes a draw from the posterior
        (posterior_latents), the same for the same seed."""
        return self.decode(self.posterior_latents(images, seed, batch_size), batch_size)

    def interpolate_images(self, image_a, image_b, steps: int = 8,
                           batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """uint8 (steps, H, W, C) morphing from one real image to another: the straight line
        between their posterior means (not slerp: a mean is a point of the latent space, not a
        draw from the prior whose norm slerp preserves), decoded. The first and last images are
        the reconstructions of image_a and image_b. Each image in any form encode takes."""
        steps = _check_count("steps", steps)
        self._check_encoder("interpolate_images")
        ends = []
        for name, image in (("image_a", image_a), ("image_b", image_b)):
            x = model_input(image, self.image_shape, name)
            if len(x) != 1:
                raise AigcError(f"{name}: expected one image, got {len(x)}")
            ends.append(self.encode(x)[0][0])
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None] if steps > 1 else np.zeros((1, 1), np.float32)
        return self.decode(((1 - t) * ends[0] + t * ends[1]).astype(np.float32), batch_size)

    def _check_encoder(self, what: str):
        if self._encoder is not None:
            return self._encoder
        name = self.artifact.path.name
        if self.family != "vae":
            raise AigcError(f"{what}: {name} is a '{self.family}' model, which has no encoder; "
                            "only a VAE maps images to latents")
        raise AigcError(f"{what}: {name} holds the VAE's decoder only (exported before encoders shipped); "
                        "export it again from its checkpoint: aigc export CHECKPOINT --out FILE")
