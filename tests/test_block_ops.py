"""ops.layer_norm (with the fused residual add) and ops.gelu against the float64 numpy
references of tests/reference.py, under every ISA build. Tolerance: 3x the error of the
same math done naively in float32 (reference.naive_error_bound)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isa
import reference as ref
from aigc_engine import _C, ops
from aigc_engine.errors import AigcError


@isa.EACH
@settings(max_examples=30, deadline=None)
@given(rows=st.sampled_from([1, 2, 7, 40]), dim=st.sampled_from([1, 2, 7, 64, 768, 1023, 1100]),
       residual=st.booleans(), seed=st.integers(0, 2**31))
def test_layer_norm_matches_numpy(isa_name, rows, dim, residual, seed):
    rng = np.random.default_rng(seed)
    x0 = (rng.standard_normal((rows, dim)) * 3 + 1).astype(np.float32)
    delta = rng.standard_normal((rows, dim)).astype(np.float32) if residual else None
    weight = rng.standard_normal(dim).astype(np.float32)
    bias = rng.standard_normal(dim).astype(np.float32)
    summed = x0 + delta if residual else x0
    x = x0.copy()
    with isa.forced(isa_name):
        y = ops.layer_norm(x, weight, bias, residual=delta, eps=1e-5)
    np.testing.assert_array_equal(x, summed)  # the residual add, in place, exact in float32
    exact = ref.layer_norm(summed, weight, bias, 1e-5)
    bound = ref.naive_error_bound(exact, ref.layer_norm_naive(summed, weight, bias, 1e-5))
    assert np.abs(y - exact).max() <= bound


def test_layer_norm_out_may_be_x_and_constant_rows_give_bias():
    x = np.full((3, 5), 2.5, np.float32)
    bias = np.arange(5, dtype=np.float32)
    y = ops.layer_norm(x, np.ones(5, np.float32), bias, out=x)
    assert y is x
    np.testing.assert_array_equal(y, np.broadcast_to(bias, (3, 5)))


@isa.EACH
@pytest.mark.parametrize("n", [1, 7, 100, 70000])
def test_gelu_matches_numpy(isa_name, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 4
    x[0] = -30.0  # the far tails: exactly 0 and x
    with isa.forced(isa_name):
        y = ops.gelu(x)
    assert y is not x and y.shape == x.shape
    exact = ref.gelu(x)
    assert np.abs(y - exact).max() <= ref.naive_error_bound(exact, ref.gelu_naive(x))


def test_gelu_any_shape_and_in_place():
    x = np.linspace(-6, 6, 24, dtype=np.float32).reshape(2, 3, 4)
    expected = ops.gelu(x)
    assert expected.shape == (2, 3, 4)
    assert ops.gelu(x, out=x) is x
    np.testing.assert_array_equal(x, expected)
    assert ops.gelu(np.zeros((0, 3), np.float32)).shape == (0, 3)


def test_bad_arguments_raise():
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"weight: expected C-contiguous float32 \(4,\)"):
        ops.layer_norm(x, np.zeros(3, np.float32), np.zeros(4, np.float32))
    with pytest.raises(AigcError, match=r"residual: expected C-contiguous float32 \(2, 4\), got float32 \(2, 3\)"):
        ops.layer_norm(x, np.ones(4, np.float32), np.zeros(4, np.float32), residual=np.zeros((2, 3), np.float32))
    with pytest.raises(AigcError, match=r"x: expected C-contiguous float32 \(rows, dim\), got float64 \(2, 4\)"):
        ops.layer_norm(x.astype(np.float64), np.ones(4, np.float32), np.zeros(4, np.float32))
    with pytest.raises(AigcError, match=r"x: expected C-contiguous float32 \(rows, dim\) with dim >= 1"):
        ops.layer_norm(np.zeros((2, 0), np.float32), np.ones(0, np.float32), np.zeros(0, np.float32))
    with pytest.raises(AigcError, match=r"out: expected C-contiguous float32 \(2, 4\), got float32 \(4, 2\)"):
        ops.layer_norm(x, np.ones(4, np.float32), np.zeros(4, np.float32), out=np.zeros((4, 2), np.float32))
    frozen = x.copy()
    frozen.flags.writeable = False
    with pytest.raises(AigcError, match="x: array is read-only"):
        ops.layer_norm(frozen, np.ones(4, np.float32), np.zeros(4, np.float32), residual=x)
    ops.layer_norm(frozen, np.ones(4, np.float32), np.zeros(4, np.float32))  # no residual: x is only read
    with pytest.raises(AigcError, match="eps: expected a number > 0, got 0"):
        ops.layer_norm(x, np.ones(4, np.float32), np.zeros(4, np.float32), eps=0)
    with pytest.raises(AigcError, match="x: expected C-contiguous float32 .*non-contiguous float32"):
        ops.gelu(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(AigcError, match=r"out: expected C-contiguous float32 \(4,\), got float32 \(5,\)"):
        ops.gelu(np.zeros(4, np.float32), out=np.zeros(5, np.float32))
    # The extension's own checks, under the faces.
    with pytest.raises(ValueError, match="x: expected C-contiguous float32"):
        _C.gelu_tanh(np.zeros((2, 2), np.float32))
