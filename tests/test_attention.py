"""Attention prefill and paged decode against the numpy references of tests/reference.py
(float64 sums), every ISA; no torch (benchmarks/native_kernels.py compares with torch's SDPA).

Tolerance, flash-attention's habit: the error of ours against the float64 reference may be at
most 3x the error of the same attention computed naively in float32 (plus 1e-6 for the
cases where the naive float32 one happens to be nearly exact): reference.naive_error_bound.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isa
import reference as ref
from aigc_engine import ops


def check(ours, exact, naive, message):
    assert np.abs(ours - exact).max() <= ref.naive_error_bound(exact, naive), message


@isa.EACH
@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.sampled_from([0, 1, 2, 7, 31, 64, 65, 100, 129]), min_size=1, max_size=4),
       head_dim=st.sampled_from([32, 64, 80, 128, 256]), heads=st.sampled_from([(1, 1), (4, 4), (4, 2), (6, 1)]),
       bf16=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_prefill_matches_reference(isa_name, lengths, head_dim, heads, bf16, seed):
    rng = np.random.default_rng(seed)
    n_heads, n_kv = heads
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    tokens = int(cu[-1])
    q = rng.standard_normal((tokens, n_heads, head_dim), dtype=np.float32)
    k = rng.standard_normal((tokens, n_kv, head_dim), dtype=np.float32)
    v = rng.standard_normal((tokens, n_kv, head_dim), dtype=np.float32)
    if bf16:
        k, v = ops.to_bf16(k), ops.to_bf16(v)
    k_ref, v_ref = (ops.from_bf16(k), ops.from_bf16(v)) if bf16 else (k, v)
    with isa.forced(isa_name):
        out = ops.attention_prefill(q, k, v, cu)
    exact = ref.attention_prefill(q, k_ref, v_ref, cu)
    naive = ref.attention_prefill(q, k_ref, v_ref, cu, dtype=np.float32)
    for s in range(len(lengths)):
        a, b = cu[s], cu[s + 1]
        if a < b:
            check(out[a:b], exact[a:b], naive[a:b], s)


def test_prefill_custom_scale_and_out():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((70, 2, 64), dtype=np.float32) for _ in range(3))
    out = np.empty_like(q)
    result = ops.attention_prefill(q, k, v, np.array([0, 70], np.int32), scale=0.05, out=out)
    assert result is out
    cu = np.array([0, 70], np.int32)
    exact = ref.attention_prefill(q, k, v, cu, scale=0.05)
    check(out, exact, ref.attention_prefill(q, k, v, cu, scale=0.05, dtype=np.float32), "scale=0.05")


def paged(rng, lengths, block_size, n_kv, head_dim, extra_blocks=3):
    """A cache with the sequences' blocks scattered in random order, and its block table."""
    need = [(n + block_size - 1) // block_size for n in lengths]
    num_blocks = sum(need) + extra_blocks
    k_cache = rng.standard_normal((num_blocks, block_size, n_kv, head_dim), dtype=np.float32)
    v_cache = rng.standard_normal((num_blocks, block_size, n_kv, head_dim), dtype=np.float32)
    order = rng.permutation(num_blocks)
    table = np.full((len(lengths), max(need) + 1), -7, np.int32)  # unused entries are never read
    used = 0
    for b, n in enumerate(need):
        table[b, :n] = order[used:used + n]
        used += n
    return k_cache, v_cache, table


@isa.EACH
@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.sampled_from([1, 2, 15, 16, 17, 63, 100, 300]), min_size=1, max_size=5),
       head_dim=st.sampled_from([32, 64, 80, 128, 256]), heads=st.sampled_from([(1, 1), (4, 4), (4, 2), (8, 1)]),
       block_size=st.sampled_from([1, 16, 5]), bf16=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_decode_matches_reference(isa_name, lengths, head_dim, heads, block_size, bf16, seed):
    rng = np.random.default_rng(seed)
    n_heads, n_kv = heads
    k_cache, v_cache, table = paged(rng, lengths, block_size, n_kv, head_dim)
    if bf16:
        k_cache, v_cache = ops.to_bf16(k_cache), ops.to_bf16(v_cache)
    k_ref, v_ref = (ops.from_bf16(k_cache), ops.from_bf16(v_cache)) if bf16 else (k_cache, v_cache)
    q = rng.standard_normal((len(lengths), n_heads, head_dim), dtype=np.float32)
    lens = np.array(lengths, np.int32)
    with isa.forced(isa_name):
        out = ops.attention_decode(q, k_cache, v_cache, table, lens)
    # The one new query is the last position: it sees every cached token.
    exact = ref.attention_decode(q, k_ref, v_ref, table, lens)
    naive = ref.attention_decode(q, k_ref, v_ref, table, lens, dtype=np.float32)
    for b in range(len(lengths)):
        check(out[b], exact[b], naive[b], b)


def test_decode_equals_last_row_of_prefill():
    rng = np.random.default_rng(1)
    length, block_size = 77, 16
    q, k, v = (rng.standard_normal((length, 4, 64), dtype=np.float32) for _ in range(3))
    prefill = ops.attention_prefill(q, k, v, np.array([0, length], np.int32))
    blocks = (length + block_size - 1) // block_size
    k_cache = np.zeros((blocks, block_size, 4, 64), np.float32)
    v_cache = np.zeros_like(k_cache)
    k_cache.reshape(-1, 4, 64)[:length] = k
    v_cache.reshape(-1, 4, 64)[:length] = v
    decode = ops.attention_decode(q[-1:], k_cache, v_cache, np.arange(blocks, dtype=np.int32)[None],
                                  np.array([length], np.int32))
    np.testing.assert_allclose(decode[0], prefill[-1], atol=2e-6)


def test_bf16_round_trip():
    x = np.array([1.0, -2.5, 1 + 2**-8, 1 + 3 * 2**-8, 3.0e38, np.inf, -np.inf, 0.0], np.float32)
    bits = ops.to_bf16(x)
    # Ties go to the even mantissa: 1 + 2^-8 -> 1, 1 + 3 * 2^-8 -> 1 + 2^-6.
    np.testing.assert_array_equal(ops.from_bf16(bits)[:4], [1.0, -2.5, 1.0, 1 + 2**-6])
    assert ops.from_bf16(bits)[5] == np.inf and ops.from_bf16(bits)[6] == -np.inf
    assert np.isnan(ops.from_bf16(ops.to_bf16(np.array([np.nan], np.float32))))[0]
    # The same bits as the reference's rounding (an independent numpy formula).
    np.testing.assert_array_equal(ops.from_bf16(bits[:5]), ref.bf16_round(x[:5]).astype(np.float32))


def test_prefill_bad_inputs():
    q = np.zeros((10, 4, 32), np.float32)
    kv = np.zeros((10, 2, 32), np.float32)
    cu = np.array([0, 4, 10], np.int32)
    with pytest.raises(ValueError, match=r"q: expected C-contiguous float32 \(tokens, n_heads, head_dim\), got float64"):
        ops.attention_prefill(q.astype(np.float64), kv, kv, cu)
    with pytest.raises(ValueError, match="k: expected float32 or uint16"):
        ops.attention_prefill(q, kv.astype(np.float16), kv, cu)
    with pytest.raises(ValueError, match="v: expected the dtype of k"):
        ops.attention_prefill(q, kv, ops.to_bf16(kv), cu)
    with pytest.raises(ValueError, match=r"k: expected C-contiguous float32 \(10, n_kv_heads, 32\), got float32 \(10, 2, 16\)"):
        ops.attention_prefill(q, kv[:, :, :16].copy(), kv, cu)
    with pytest.raises(ValueError, match=r"n_kv_heads \(3\) must divide n_heads \(4\)"):
        ops.attention_prefill(q, np.zeros((10, 3, 32), np.float32), np.zeros((10, 3, 32), np.float32), cu)
    with pytest.raises(ValueError, match="cu_seqlens: expected to start at 0 and end at 10"):
        ops.attention_prefill(q, kv, kv, np.array([0, 4, 9], np.int32))
    with pytest.raises(ValueError, match=r"cu_seqlens: not monotone at sequence 1 \(11 then 10\)"):
        ops.attention_prefill(q, kv, kv, np.array([0, 11, 10], np.int32))
    with pytest.raises(ValueError, match="cu_seqlens: expected C-contiguous int32"):
        ops.attention_prefill(q, kv, kv, cu.astype(np.int64))
    with pytest.raises(ValueError, match="q: expected C-contiguous float32 .*non-contiguous"):
        ops.attention_prefill(np.zeros((10, 4, 64), np.float32)[:, :, ::2], kv, kv, cu)


def test_decode_bad_inputs():
    rng = np.random.default_rng(0)
    k_cache, v_cache, table = paged(rng, [20, 5], 16, 2, 32)
    q = np.zeros((2, 4, 32), np.float32)
    lens = np.array([20, 5], np.int32)
    ops.attention_decode(q, k_cache, v_cache, table, lens)
    bad = table.copy()
    bad[1, 0] = k_cache.shape[0]
    with pytest.raises(ValueError, match=r"block_table: sequence 1 block 0 is 6, outside \[0, 6\)"):
        ops.attention_decode(q, k_cache, v_cache, bad, lens)
    with pytest.raises(ValueError, match=r"context_lens: sequence 0 has 49, expected 1 .. 48"):
        ops.attention_decode(q, k_cache, v_cache, table, np.array([49, 5], np.int32))
    with pytest.raises(ValueError, match="context_lens: sequence 1 has 0"):
        ops.attention_decode(q, k_cache, v_cache, table, np.array([20, 0], np.int32))
    with pytest.raises(ValueError, match=r"block_table: expected C-contiguous int32 \(2, max_blocks\)"):
        ops.attention_decode(q, k_cache, v_cache, table[:1].copy(), lens)
    with pytest.raises(ValueError, match="v_cache: expected the dtype of k_cache"):
        ops.attention_decode(q, k_cache, ops.to_bf16(v_cache), table, lens)
