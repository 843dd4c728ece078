"""The CUDA kernels equal the CPU ones bit for bit (skipped where no GPU is visible), and
without one — a CPU-only build, or a CUDA build on a machine with no GPU — device="cuda"
fails at once with a message naming the device and why."""

import numpy as np
import pytest

from aigc_engine import _C, ops

needs_gpu = pytest.mark.skipif(not ops.cuda_available(), reason="no CUDA device (or a CPU-only build)")


@needs_gpu
@pytest.mark.parametrize("truncation", [None, 0.7, 1e-4])
def test_latents_on_cuda_equal_cpu(truncation):
    cpu = ops.sample_latent(257, 100, 42, first_index=5, truncation=truncation)
    cuda = ops.sample_latent(257, 100, 42, first_index=5, truncation=truncation, device="cuda")
    np.testing.assert_array_max_ulp(cuda, cpu, maxulp=1)


@needs_gpu
def test_images_to_uint8_on_cuda_equals_cpu():
    images = np.random.default_rng(0).uniform(-1.2, 1.2, (33, 3, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(ops.images_to_uint8(images, device="cuda"), ops.images_to_uint8(images))
    images[3, 1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        ops.images_to_uint8(images, device="cuda")


@pytest.mark.skipif(ops.cuda_available(), reason="a CUDA device is visible")
@pytest.mark.parametrize("call", [
    lambda: ops.sample_latent(4, 8, 1, device="cuda"),
    lambda: ops.images_to_uint8(np.zeros((1, 1, 2, 2), np.float32), device="cuda"),
], ids=["sample_latent", "images_to_uint8"])
def test_cuda_without_a_gpu_says_why(call):
    why = "no CUDA device is visible" if _C.cuda_compiled else "this build of aigc_engine has no CUDA support"
    with pytest.raises(ValueError, match=f"^device='cuda': {why}$"):
        call()


def test_an_unknown_device_is_refused_by_name():
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda', got 'tpu'"):
        ops.sample_latent(4, 8, 1, device="tpu")
