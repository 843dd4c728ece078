"""uint8 post-processing and spherical interpolation against numpy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isa
import reference
from aigc_engine import ops


@isa.EACH
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), c=st.sampled_from([1, 3, 4]), h=st.integers(1, 9), w=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1))
def test_images_to_uint8_matches_numpy(isa_name, n, c, h, w, seed):
    images = np.random.default_rng(seed).uniform(-1.3, 1.3, (n, c, h, w)).astype(np.float32)
    # The exact rounding boundaries: x where (x + 1) * 127.5 lands on .5.
    images.flat[0] = np.float32(-1 + 0.5 / 127.5)
    expected = reference.images_to_uint8(images)
    with isa.forced(isa_name):
        np.testing.assert_array_equal(ops.images_to_uint8(images), expected)


@isa.EACH
def test_images_to_uint8_many_images_over_threads(isa_name):
    images = np.random.default_rng(0).uniform(-1.1, 1.1, (37, 1, 28, 28)).astype(np.float32)
    images[29, 0, 5, 5] = np.nan
    with isa.forced(isa_name), pytest.raises(ValueError, match="1 non-finite"):
        ops.images_to_uint8(images)
    images[29, 0, 5, 5] = 0.25
    np.testing.assert_array_equal(ops.images_to_uint8(images), reference.images_to_uint8(images))


def test_forcing_an_unknown_isa_is_a_clear_error():
    with isa.forced("sse9"), pytest.raises(ValueError, match="AIGC_FORCE_ISA: expected generic, avx2 or avx512"):
        ops.images_to_uint8(np.zeros((1, 1, 2, 2), np.float32))


def test_images_to_uint8_extremes():
    images = np.array([-1, 1, -5, 5, 0], np.float32).reshape(1, 1, 1, 5)
    assert ops.images_to_uint8(images).ravel().tolist() == [0, 255, 0, 255, 128]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_output_is_an_error(bad):
    images = np.zeros((2, 1, 3, 3), np.float32)
    images[1, 0, 2, 2] = bad
    with pytest.raises(ValueError, match="1 non-finite"):
        ops.images_to_uint8(images)


def test_images_to_uint8_checks_arguments():
    with pytest.raises(ValueError, match=r"images: expected C-contiguous float32 \(n, channels, height, width\)"):
        ops.images_to_uint8(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"out: expected C-contiguous uint8 \(2, 4, 5, 3\)"):
        ops.images_to_uint8(np.zeros((2, 3, 4, 5), np.float32), out=np.zeros((2, 3, 4, 5), np.uint8))


@settings(max_examples=30, deadline=None)
@given(dim=st.integers(2, 128), seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 9))
def test_slerp_matches_reference(dim, seed, steps):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, dim)).astype(np.float32)
    t = np.linspace(0, 1, steps, dtype=np.float32)
    np.testing.assert_allclose(ops.slerp(a, b, t), reference.slerp(a, b, t), rtol=1e-5, atol=1e-5)


def test_slerp_endpoints_and_parallel_vectors():
    a, b = np.random.default_rng(0).normal(size=(2, 100)).astype(np.float32)
    path = ops.slerp(a, b, np.array([0, 1], np.float32))
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[1], b, atol=1e-6)
    # Parallel vectors fall back to the straight line instead of dividing by sin(0).
    np.testing.assert_allclose(ops.slerp(a, 2 * a, np.array([0.5], np.float32))[0], 1.5 * a, rtol=1e-5)
