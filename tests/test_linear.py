"""ops.Linear, the decoder's projections (float32, also via OpenBLAS; bfloat16 and int8
weights), against float64 numpy with the same rounding (tests/reference.py), under every
ISA build."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isa
import reference as ref
from aigc_engine import _C, ops


def forward_under_each(layer, x: np.ndarray, isas) -> dict[str, np.ndarray]:
    """y = layer(x) under each named ISA build."""
    outs = {}
    for name in isas:
        with isa.forced(name):
            outs[name] = layer.forward(x)
    return outs


@isa.EACH
@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 9), k=st.integers(1, 200), n=st.integers(1, 150), bias=st.booleans(),
       dtype=st.sampled_from(ops.WEIGHT_DTYPES), seed=st.integers(0, 2**31))
def test_linear_matches_numpy(isa_name, m, k, n, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    x = rng.standard_normal((m, k)).astype(np.float32)
    expected = ref.linear(x, w, b, dtype)
    # float32 accumulation over k terms: the error bound of a naive sum, k·eps·Σ|x·w|
    # (int8 sums are exact; only its final scaling rounds).
    bound = k * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(ref.WEIGHT_ROUNDING[dtype](w))) + 1e-6
    layer = ops.Linear(w, b, dtype)
    assert (layer.k, layer.n, layer.dtype) == (k, n, dtype)
    for blas in (False, True):
        with isa.forced(isa_name):
            out = layer.forward(x, blas=blas)
        assert out.shape == (m, n) and out.dtype == np.float32
        assert np.all(np.abs(out - expected) <= bound), (blas, np.abs(out - expected).max())


@isa.EACH
@pytest.mark.parametrize("dtype", ops.WEIGHT_DTYPES)
def test_a_row_does_not_depend_on_the_other_rows(isa_name, dtype):
    """The determinism contract: a request's numbers are the same whatever shares its batch."""
    rng = np.random.default_rng(1)
    layer = ops.Linear(rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal(200).astype(np.float32), dtype)
    x = rng.standard_normal((37, 300)).astype(np.float32)
    with isa.forced(isa_name):
        full = layer.forward(x)
        for m in (1, 2, 3, 5, 8, 13):
            np.testing.assert_array_equal(layer.forward(x[-m:].copy()), full[-m:])


@pytest.mark.parametrize("isa_name", isa.params(("avx2", "avx512")))
@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 13), k=st.integers(1, 300), n=st.integers(1, 150), seed=st.integers(0, 2**31))
def test_int8_is_the_same_on_every_isa(isa_name, m, k, n, seed):
    """int8 sums are exact (VNNI, AVX2 vpmaddwd, portable loops): y is bit-identical to the
    generic build's on every ISA."""
    rng = np.random.default_rng(seed)
    layer = ops.Linear(rng.standard_normal((k, n)).astype(np.float32), rng.standard_normal(n).astype(np.float32), "int8")
    x = (rng.standard_normal((m, k)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    outs = forward_under_each(layer, x, ("generic", isa_name))
    np.testing.assert_array_equal(outs[isa_name], outs["generic"])


@pytest.mark.skipif(not _C.cpu_has_amx_int8(), reason="needs AMX-INT8 (and the kernel's leave to use its tiles)")
@pytest.mark.parametrize("m, k, n", [(16, 768, 130), (17, 256, 64), (32, 1024, 200), (47, 3072, 70),
                                     (40, 300, 65)])  # k = 300: k4 = 75 groups, no tiles (VNNI blocks)
def test_int8_amx_tiles_give_the_generic_builds_bits(m, k, n):
    """Rows in tiles of 16 (tdpbusd), the rest in VNNI blocks: the same exact sums, so the
    same y as the portable loops, and every row as when it is alone."""
    rng = np.random.default_rng(m * k)
    layer = ops.Linear(rng.standard_normal((k, n)).astype(np.float32), rng.standard_normal(n).astype(np.float32), "int8")
    x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
    outs = forward_under_each(layer, x, ("generic", "avx512"))
    np.testing.assert_array_equal(outs["avx512"], outs["generic"])
    with isa.forced("avx512"):
        np.testing.assert_array_equal(layer.forward(x[-1:].copy()), outs["avx512"][-1:])


@pytest.mark.skipif(isa.skip_reason("avx512") is not None,
                    reason=f"needs the avx2 and avx512 builds: {isa.skip_reason('avx512')}")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_multiply_add_kernels_agree(dtype):
    """AVX2 and AVX-512 both do one FMA per element and k, in k order: the same bits (the
    portable loops round the product and the sum apart, so generic may differ)."""
    rng = np.random.default_rng(4)
    layer = ops.Linear(rng.standard_normal((333, 150)).astype(np.float32), rng.standard_normal(150).astype(np.float32), dtype)
    x = rng.standard_normal((13, 333)).astype(np.float32)
    outs = forward_under_each(layer, x, ("avx2", "avx512"))
    np.testing.assert_array_equal(outs["avx512"], outs["avx2"])


@isa.EACH
def test_int8_extreme_products_stay_exact(isa_name):
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
    layer = ops.Linear(w, b, "int8")
    exact = (x.astype(np.int64) * 127) @ (w.astype(np.int64) * 127)
    scale = np.float32(1) / np.float32(127)  # both max |x| and max |w| are 1
    expected = exact.astype(np.float32) * (scale * scale) + b
    with isa.forced(isa_name):
        np.testing.assert_array_equal(layer.forward(x), expected)


def test_quantised_layers_stay_close_to_float32():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((768, 256)) * 0.02).astype(np.float32)
    x = rng.standard_normal((4, 768)).astype(np.float32)
    exact = x @ w
    for dtype, tolerance in (("bfloat16", 0.01), ("int8", 0.03)):
        out = ops.Linear(w, None, dtype).forward(x)
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
    """The extension's own checks (the faces' below)."""
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call, message", [
    (lambda: ops.Linear(np.zeros((3, 4), np.float64)), r"weight: expected C-contiguous float32 \(k, n\), got float64 \(3, 4\)"),
    (lambda: ops.Linear(np.zeros((0, 4), np.float32)), r"weight: expected .* with k, n >= 1, got shape \(0, 4\)"),
    (lambda: ops.Linear(np.zeros((3, 4), np.float32), None, "fp8"), "dtype: expected 'float32', 'bfloat16' or 'int8', got 'fp8'"),
    (lambda: ops.Linear(np.zeros((3, 4), np.float32), np.zeros(5, np.float32)), r"bias: expected C-contiguous float32 \(4,\)"),
    (lambda: ops.Linear(np.zeros((3, 4), np.float32)).forward(np.zeros((2, 3), np.float64)),
     r"x: expected C-contiguous float32 \(m, 3\), got float64 \(2, 3\)"),
    (lambda: ops.Linear(np.zeros((3, 4), np.float32)).forward(np.zeros((2, 5), np.float32)), r"x: expected C-contiguous float32 \(m, 3\)"),
    (lambda: ops.Linear(np.zeros((3, 4), np.float32)).forward(np.zeros((2, 3), np.float32), out=np.zeros((2, 5), np.float32)),
     r"out: expected C-contiguous float32 \(2, 4\)"),
    (lambda: ops.Linear(np.zeros((3, 4), np.float32)).forward(np.zeros((2, 3), np.float32), blas=1),
     "blas: expected True or False, got 1"),
])
def test_face_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
