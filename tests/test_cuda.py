"""The CUDA kernels equal the CPU ones bit for bit. Skipped where no GPU is visible."""

import numpy as np
import pytest

from aigc_engine import _C, ops

pytestmark = pytest.mark.skipif(not ops.cuda_available(), reason="no CUDA device (or a CPU-only build)")


@pytest.mark.parametrize("truncation", [None, 0.7, 1e-4])
def test_latents_on_cuda_equal_cpu(truncation):
    cpu = ops.sample_latent(257, 100, 42, first_index=5, truncation=truncation)
    cuda = ops.sample_latent(257, 100, 42, first_index=5, truncation=truncation, device="cuda")
    np.testing.assert_array_max_ulp(cuda, cpu, maxulp=1)


def test_images_to_uint8_on_cuda_equals_cpu():
    images = np.random.default_rng(0).uniform(-1.2, 1.2, (33, 3, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(ops.images_to_uint8(images, device="cuda"), ops.images_to_uint8(images))
    images[3, 1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        ops.images_to_uint8(images, device="cuda")


def test_cuda_build_flag_is_set():
    assert _C.cuda_compiled
