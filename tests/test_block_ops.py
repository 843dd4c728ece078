"""Residual + layer norm and the tanh GELU of the GPT block against float64 numpy,
under every ISA build."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isa
from aigc_engine import _C

EPS32 = np.finfo(np.float32).eps


def layer_norm64(h, weight, bias, eps):
    h = h.astype(np.float64)
    mean = h.mean(axis=1, keepdims=True)
    var = ((h - mean) ** 2).mean(axis=1, keepdims=True)
    return (h - mean) / np.sqrt(var + eps) * weight + bias


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), dim=st.integers(1, 1100), residual=st.booleans(), seed=st.integers(0, 2**31))
def test_add_layer_norm_matches_numpy(rows, dim, residual, seed):
    rng = np.random.default_rng(seed)
    h0 = (rng.standard_normal((rows, dim)) * 3 + 1).astype(np.float32)
    delta = rng.standard_normal((rows, dim)).astype(np.float32) if residual else None
    weight = rng.standard_normal(dim).astype(np.float32)
    bias = rng.standard_normal(dim).astype(np.float32)
    summed = h0 + delta if residual else h0
    expected = layer_norm64(summed, weight, bias, 1e-5)
    for name in isa.SUPPORTED:
        h, y = h0.copy(), np.empty_like(h0)
        with isa.forced(name):
            _C.add_layer_norm(h, delta, weight, bias, y, 1e-5)
        np.testing.assert_array_equal(h, summed)
        # float32 sums over dim terms: relative error up to ~dim·eps on the normalised values.
        bound = (dim + 10) * EPS32 * (np.abs(expected) + np.abs(bias) + 1)
        assert np.all(np.abs(y - expected) <= bound), name


def gelu64(x):
    x = x.astype(np.float64)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("n", [1, 7, 100, 70000])
def test_gelu_tanh_matches_numpy(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 4
    x[0] = -30.0  # the far tails: exactly 0 and x
    for name in isa.SUPPORTED:
        y = x.copy()
        with isa.forced(name):
            _C.gelu_tanh(y)
        np.testing.assert_allclose(y, gelu64(x), rtol=1e-5, atol=1e-6, err_msg=name)


def test_bad_shapes_raise():
    h = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"weight: expected C-contiguous float32 \(4,\)"):
        _C.add_layer_norm(h, None, np.zeros(3, np.float32), np.zeros(4, np.float32), h, 1e-5)
    with pytest.raises(ValueError, match="x: expected C-contiguous float32"):
        _C.gelu_tanh(np.zeros((2, 2), np.float32))
