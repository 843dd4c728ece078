"""The decoder's projections (float32 via OpenBLAS, bf16 and int8 weight-only kernels)
against float64 numpy with the same weight rounding, under every ISA build."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isa
from aigc_engine import _C


def bf16_round(w: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 (round to nearest even) → float32, in numpy."""
    bits = w.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def int8_round(w: np.ndarray) -> np.ndarray:
    """Symmetric per-output-column int8: the largest |w| of a column maps to 127."""
    largest = np.abs(w).max(axis=0)
    scale = np.where(largest > 0, largest / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127) * scale.astype(np.float64)


def int8_activations(x: np.ndarray) -> np.ndarray:
    """Per-row int8 activations (the int8 layers quantise x too): round(x · 127 / max|x|) · max|x| / 127."""
    largest = np.abs(x).max(axis=1, keepdims=True)
    inverse = np.where(largest > 0, np.float32(127) / np.where(largest > 0, largest, 1), np.float32(0))
    return np.rint(x * inverse.astype(np.float32)) * (largest.astype(np.float64) / 127)


def forward_under_each(layer, x: np.ndarray, isas) -> dict[str, np.ndarray]:
    """y = layer(x) under each named ISA build."""
    outs = {}
    for name in isas:
        outs[name] = np.empty((x.shape[0], layer.n), np.float32)
        with isa.forced(name):
            layer.forward(x, outs[name])
    return outs


ROUNDING = {"float32": lambda w: w.astype(np.float64), "bfloat16": bf16_round, "int8": int8_round}
ACTIVATIONS = {"float32": lambda x: x.astype(np.float64), "bfloat16": lambda x: x.astype(np.float64),
               "int8": int8_activations}


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 9), k=st.integers(1, 200), n=st.integers(1, 150), bias=st.booleans(),
       dtype=st.sampled_from(sorted(ROUNDING)), seed=st.integers(0, 2**31))
def test_linear_matches_numpy(m, k, n, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    x = rng.standard_normal((m, k)).astype(np.float32)
    expected = ACTIVATIONS[dtype](x) @ ROUNDING[dtype](w) + (0 if b is None else b)
    # float32 accumulation over k terms: the error bound of a naive sum, k·eps·Σ|x·w|
    # (int8 sums are exact; only its final scaling rounds).
    bound = k * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(ROUNDING[dtype](w))) + 1e-6
    layer = _C.Linear(w, b, dtype)
    for name in isa.SUPPORTED:
        for blas in (False, True):
            out = np.empty((m, n), np.float32)
            with isa.forced(name):
                layer.forward(x, out, blas=blas)
            assert np.all(np.abs(out - expected) <= bound), (name, blas, np.abs(out - expected).max())


@pytest.mark.parametrize("dtype", sorted(ROUNDING))
def test_a_row_does_not_depend_on_the_other_rows(dtype):
    """The determinism contract: a request's numbers are the same whatever shares its batch."""
    rng = np.random.default_rng(1)
    layer = _C.Linear(rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal(200).astype(np.float32), dtype)
    x = rng.standard_normal((37, 300)).astype(np.float32)
    full = np.empty((37, 200), np.float32)
    layer.forward(x, full)
    for m in (1, 2, 3, 5, 8, 13):
        part = np.empty((m, 200), np.float32)
        layer.forward(x[-m:].copy(), part)
        np.testing.assert_array_equal(part, full[-m:])


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 13), k=st.integers(1, 300), n=st.integers(1, 150), seed=st.integers(0, 2**31))
def test_int8_is_the_same_on_every_isa(m, k, n, seed):
    """int8 sums are exact (VNNI, AVX2 vpmaddwd, portable loops): y is bit-identical on every ISA."""
    rng = np.random.default_rng(seed)
    layer = _C.Linear(rng.standard_normal((k, n)).astype(np.float32), rng.standard_normal(n).astype(np.float32), "int8")
    x = (rng.standard_normal((m, k)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    outs = forward_under_each(layer, x, isa.SUPPORTED)
    for name in isa.SUPPORTED:
        np.testing.assert_array_equal(outs[name], outs["generic"], err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_multiply_add_kernels_agree(dtype):
    """AVX2 and AVX-512 both do one FMA per element and k, in k order: the same bits (the
    portable loops round the product and the sum apart, so generic may differ)."""
    fused = [name for name in isa.SUPPORTED if name != "generic"]
    if len(fused) < 2:
        pytest.skip(f"one FMA build on this CPU: {fused}")
    rng = np.random.default_rng(4)
    layer = _C.Linear(rng.standard_normal((333, 150)).astype(np.float32), rng.standard_normal(150).astype(np.float32), dtype)
    x = rng.standard_normal((13, 333)).astype(np.float32)
    outs = forward_under_each(layer, x, fused)
    for name in fused:
        np.testing.assert_array_equal(outs[name], outs[fused[0]], err_msg=name)


def test_int8_extreme_products_stay_exact():
    """|w| = 127 against activations at 1 and 255 (|x - 128| = 127): a pair of products reaches
    2 · 255 · 127 = 64770, which vpmaddubsw's int16 sums would saturate. y is known exactly:
    float32(Σ (xq − 128) · wq) · (x_scale · w_scale) + bias, the kernels' own float32 steps."""
    rng = np.random.default_rng(3)
    m, k, n = 7, 301, 130
    w = rng.choice(np.array([-1.0, 1.0], np.float32), (k, n))
    x = rng.choice(np.array([-1.0, 1.0], np.float32), (m, k))
    x[:, :k // 2] = 1.0  # long runs of equal signs: sums near ±k · 127²
    w[:k // 2, : n // 2] = 1.0
    b = rng.standard_normal(n).astype(np.float32)
    layer = _C.Linear(w, b, "int8")
    exact = (x.astype(np.int64) * 127) @ (w.astype(np.int64) * 127)
    scale = np.float32(1) / np.float32(127)  # both max |x| and max |w| are 1
    expected = exact.astype(np.float32) * (scale * scale) + b
    for name, out in forward_under_each(layer, x, isa.SUPPORTED).items():
        np.testing.assert_array_equal(out, expected, err_msg=name)


def test_quantised_layers_stay_close_to_float32():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((768, 256)) * 0.02).astype(np.float32)
    x = rng.standard_normal((4, 768)).astype(np.float32)
    exact = x @ w
    for dtype, tolerance in (("bfloat16", 0.01), ("int8", 0.03)):
        out = np.empty_like(exact)
        _C.Linear(w, None, dtype).forward(x, out)
        assert np.linalg.norm(out - exact) / np.linalg.norm(exact) < tolerance


@pytest.mark.parametrize("call, message", [
    (lambda: _C.Linear(np.zeros((3, 4), np.float64)), r"weight: expected C-contiguous float32 \(k, n\), got float64"),
    (lambda: _C.Linear(np.zeros((3, 4), np.float32), np.zeros(5, np.float32)), r"bias: expected C-contiguous float32 \(4,\)"),
    (lambda: _C.Linear(np.zeros((3, 4), np.float32), None, "fp8"), "dtype: expected 'float32', 'bfloat16' or 'int8'"),
    (lambda: _C.Linear(np.zeros((3, 4), np.float32)).forward(np.zeros((2, 5), np.float32), np.zeros((2, 4), np.float32)),
     r"x: expected C-contiguous float32 \(m, 3\)"),
    (lambda: _C.Linear(np.zeros((3, 4), np.float32)).forward(np.zeros((2, 3), np.float32), np.zeros((2, 5), np.float32)),
     r"out: expected C-contiguous float32 \(2, 4\)"),
])
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
