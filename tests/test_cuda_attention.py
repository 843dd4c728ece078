"""The CUDA attention kernels (csrc/cuda/attention_*.cu) against the float64 references of
tests/reference.py and against the CPU kernels on the same inputs (skipped where no GPU is
visible); run everywhere: device="cuda" says why it cannot run, after the same argument checks.

Tolerance as in test_attention.py (flash-attention's habit): a kernel may be off the float64
reference by at most 3x the error of the same attention done naively in float32, which grows with
the context's length (reference.naive_error_bound); the CUDA and the CPU kernels, each within
that bound of the reference, must be within twice it of each other.
"""

import numpy as np
import pytest

import reference as ref
from aigc_engine import _C, ops
from test_attention import paged

needs_gpu = pytest.mark.skipif(not ops.cuda_available(), reason="no CUDA device (or a CPU-only build)")

# Empty sequences, length 1, odd lengths, one query tile (16) and one key tile (32) exactly and past them.
LENGTHS = [0, 1, 7, 0, 33, 100, 16, 17]
GQA = [(12, 12), (12, 6), (12, 3), (12, 1)]  # n_heads / n_kv_heads = 1, 2, 4, 12
HEAD_DIMS = [1, 33, 80, 256, 512]  # 512: the largest the kernels accept


def check_against_reference_and_cpu(cuda, cpu, exact, naive, what):
    bound = ref.naive_error_bound(exact, naive)
    assert np.abs(cuda - exact).max(initial=0.0) <= bound, f"{what}: CUDA vs float64"
    assert np.abs(cuda - cpu).max(initial=0.0) <= 2 * bound, f"{what}: CUDA vs CPU"


def prefill_inputs(seed, lengths, n_heads, n_kv, head_dim, bf16):
    rng = np.random.default_rng(seed)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    tokens = int(cu[-1])
    q = rng.standard_normal((tokens, n_heads, head_dim), dtype=np.float32)
    k, v = (rng.standard_normal((tokens, n_kv, head_dim), dtype=np.float32) for _ in range(2))
    if bf16:
        k, v = ops.to_bf16(k), ops.to_bf16(v)
    return q, k, v, cu


def run_prefill(q, k, v, cu, bf16, scale=None, out=None):
    cuda = ops.attention_prefill(q, k, v, cu, scale=scale, device="cuda", out=out)
    cpu = ops.attention_prefill(q, k, v, cu, scale=scale)
    k_ref, v_ref = (ops.from_bf16(k), ops.from_bf16(v)) if bf16 else (k, v)
    exact = ref.attention_prefill(q, k_ref, v_ref, cu, scale)
    naive = ref.attention_prefill(q, k_ref, v_ref, cu, scale, dtype=np.float32)
    for s in range(len(cu) - 1):
        a, b = cu[s], cu[s + 1]
        if a < b:
            check_against_reference_and_cpu(cuda[a:b], cpu[a:b], exact[a:b], naive[a:b], f"sequence {s}")
    return cuda


@needs_gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("heads", GQA, ids=[f"{h}/{kv}" for h, kv in GQA])
def test_prefill_gqa_on_cuda(heads, bf16):
    run_prefill(*prefill_inputs(0, LENGTHS, *heads, 64, bf16), bf16)


@needs_gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_prefill_head_dims_on_cuda(head_dim, bf16):
    run_prefill(*prefill_inputs(1, [1, 40, 5, 0, 65], 4, 2, head_dim, bf16), bf16)


@needs_gpu
def test_prefill_long_sequence_custom_scale_and_out_on_cuda():
    q, k, v, cu = prefill_inputs(2, [300], 2, 1, 64, False)
    out = np.empty_like(q)
    assert run_prefill(q, k, v, cu, False, scale=0.05, out=out) is out


def decode_inputs(seed, lengths, block_size, n_heads, n_kv, head_dim, bf16):
    rng = np.random.default_rng(seed)
    k_cache, v_cache, table = paged(rng, lengths, block_size, n_kv, head_dim)
    if bf16:
        k_cache, v_cache = ops.to_bf16(k_cache), ops.to_bf16(v_cache)
    q = rng.standard_normal((len(lengths), n_heads, head_dim), dtype=np.float32)
    return q, k_cache, v_cache, table, np.array(lengths, np.int32)


def run_decode(q, k_cache, v_cache, table, lens, bf16):
    cuda = ops.attention_decode(q, k_cache, v_cache, table, lens, device="cuda")
    cpu = ops.attention_decode(q, k_cache, v_cache, table, lens)
    k_ref, v_ref = (ops.from_bf16(k_cache), ops.from_bf16(v_cache)) if bf16 else (k_cache, v_cache)
    exact = ref.attention_decode(q, k_ref, v_ref, table, lens)
    naive = ref.attention_decode(q, k_ref, v_ref, table, lens, dtype=np.float32)
    for b in range(len(lens)):
        check_against_reference_and_cpu(cuda[b], cpu[b], exact[b], naive[b], f"sequence {b}")


@needs_gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("heads", GQA, ids=[f"{h}/{kv}" for h, kv in GQA])
def test_decode_gqa_on_cuda(heads, bf16):
    run_decode(*decode_inputs(3, [1, 2, 17, 300, 129], 16, *heads, 64, bf16), bf16)


@needs_gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_decode_head_dims_on_cuda(head_dim, bf16):
    run_decode(*decode_inputs(4, [1, 130, 33], 5, 4, 2, head_dim, bf16), bf16)


# A context splits into ranges of >= 128 keys while batch x heads is under 1024 rows: one
# sequence of 8191 keys runs as 64 ranges; block sizes 1 and 7 put every range boundary
# inside a block.
@needs_gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lengths,block_size", [([8191], 16), ([5000, 1, 129, 2049], 7), ([3001, 128], 1)])
def test_decode_long_contexts_split_on_cuda(lengths, block_size, bf16):
    run_decode(*decode_inputs(5, lengths, block_size, 12, 3, 64, bf16), bf16)


@needs_gpu
def test_decode_many_rows_one_range_each_on_cuda():
    # 100 x 12 = 1200 rows >= 1024: no split, every context in one range (then the same combine).
    lengths = list(np.random.default_rng(6).integers(1, 400, 100))
    run_decode(*decode_inputs(6, lengths, 16, 12, 12, 64, False), False)


def valid_calls():
    q, k, v, cu = prefill_inputs(8, [3, 0, 4], 4, 2, 32, False)
    dq, k_cache, v_cache, table, lens = decode_inputs(8, [20, 5], 16, 4, 2, 32, False)
    return {
        "prefill": lambda device: ops.attention_prefill(q, k, v, cu, device=device),
        "prefill (no tokens)": lambda device: ops.attention_prefill(q[:0], k[:0], v[:0], np.zeros(1, np.int32),
                                                                    device=device),
        "decode": lambda device: ops.attention_decode(dq, k_cache, v_cache, table, lens, device=device),
        "decode (no sequences)": lambda device: ops.attention_decode(dq[:0], k_cache, v_cache, table[:0], lens[:0],
                                                                     device=device),
    }


@pytest.mark.skipif(ops.cuda_available(), reason="a CUDA device is visible")
@pytest.mark.parametrize("call", valid_calls().keys())
def test_cuda_attention_without_a_gpu_says_why(call):
    why = "no CUDA device is visible" if _C.cuda_compiled else "this build of aigc_engine has no CUDA support"
    with pytest.raises(ValueError, match=f"^device='cuda': {why}$"):
        valid_calls()[call]("cuda")


@pytest.mark.parametrize("call", valid_calls().keys())
def test_an_unknown_device_is_refused_by_name(call):
    with pytest.raises(ValueError, match="^device: expected 'cpu' or 'cuda', got 'tpu'$"):
        valid_calls()[call]("tpu")


def test_bad_arrays_are_refused_before_the_device_is_chosen():
    # The same checks as on the CPU, whatever the device: the message names the argument.
    q, k, v, _ = prefill_inputs(9, [4, 6], 4, 2, 32, False)
    with pytest.raises(ValueError, match=r"cu_seqlens: not monotone at sequence 1 \(11 then 10\)"):
        ops.attention_prefill(q, k, v, np.array([0, 11, 10], np.int32), device="cuda")
    dq, k_cache, v_cache, table, _ = decode_inputs(9, [20, 5], 16, 4, 2, 32, False)
    with pytest.raises(ValueError, match=r"context_lens: sequence 0 has 49, expected 1 .. 48"):
        ops.attention_decode(dq, k_cache, v_cache, table, np.array([49, 5], np.int32), device="cuda")


@needs_gpu
def test_the_benchmarks_timed_runs_compute_the_same_output():
    # benchmarks/native_kernels.py times the kernels with these; each run is deterministic (no atomics).
    q, k, v, cu = prefill_inputs(10, [100, 3], 4, 2, 64, True)
    out = np.empty_like(q)
    assert _C.attention_prefill_cuda_seconds(q, k, v, cu, np.nan, out, 3) > 0
    np.testing.assert_array_equal(out, ops.attention_prefill(q, k, v, cu, device="cuda"))
    dq, k_cache, v_cache, table, lens = decode_inputs(10, [700, 5], 16, 4, 2, 64, False)
    out = np.empty_like(dq)
    assert _C.attention_decode_cuda_seconds(dq, k_cache, v_cache, table, lens, np.nan, out, 3) > 0
    np.testing.assert_array_equal(out, ops.attention_decode(dq, k_cache, v_cache, table, lens, device="cuda"))
