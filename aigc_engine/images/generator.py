"""ImageGenerator: batched, seeded sampling from an exported GAN, DCGAN or VAE decoder.

The generator graph runs in onnxruntime; the latents are drawn by the native
counter-based sampler (sample i of seed s is the same whatever n, batch size or
chunking) and the output becomes uint8 (n, H, W, C) in C++, chunk by chunk, straight
into one preallocated array.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..artifacts.artifact import IMAGE_FAMILIES, Artifact, read_artifact
from ..artifacts.registry import resolve
from ..artifacts.schema import IMAGE_INPUT, IMAGE_OUTPUT
from ..artifacts.session import create_session
from ..errors import AigcError
from . import memory

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
        return ops.sample_latent(n, self.latent_dim, seed, first_index=first_index,
                                 truncation=truncation, device=self.device)

    def interpolation_latents(self, seed_a: int, seed_b: int, n: int, truncation: float | None = None) -> np.ndarray:
        """float32 (n, latent_dim) on the great circle from sample 0 of seed_a to sample 0 of seed_b."""
        n = _check_count("n", n)
        a = self.latents(1, seed_a, truncation)[0]
        b = self.latents(1, seed_b, truncation)[0]
        t = np.linspace(0.0, 1.0, n, dtype=np.float32) if n > 1 else np.zeros(1, np.float32)
        return ops.slerp(a, b, t)

    # Images -------------------------------------------------------------------------

    def decode(self, z: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Latents float32 (n, latent_dim) → uint8 images (n, H, W, C), run in chunks."""
        z = np.asarray(z)
        if z.dtype != np.float32 or z.ndim != 2 or z.shape[1] != self.latent_dim or z.shape[0] < 1:
            raise AigcError(f"z: expected float32 (n, {self.latent_dim}) with n >= 1, got {z.dtype} {z.shape}")
        batch_size = _check_count("batch_size", batch_size)
        self._check_memory(z.shape[0], batch_size, latent_bytes=0)
        return self._decode(z, batch_size)

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
