"""Fuzzing the native entry points (aigc_engine._C) over their argument space: sizes of 0 and
below, wrong dtypes, non-contiguous and read-only arrays, None, out-of-range ids, positions,
block ids and context lengths, sizes whose product overflows, a model and a cache that
disagree. Every call must raise ValueError, TypeError or OverflowError or return a valid
result — never take the process down — and the next valid call must still give what it
gave before. Most cases start from a valid call and break one or two things in it, so the
checks deep inside a binding are reached, not only the first dtype check.

The regression tests first: each of those calls killed the process (SIGSEGV, SIGFPE, heap
corruption) before the bindings checked what they dereference. .ci/sanitize runs this file
under AddressSanitizer and UBSan, where a read out of bounds fails even when it does not crash.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigc_engine import _C, ops

ALLOWED = (ValueError, TypeError, OverflowError)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tolerated(fn, *args):
    """fn(*args), or None when it raised one of the exceptions a bad argument may raise."""
    try:
        return fn(*args)
    except ALLOWED:
        return None


# What a caller may hand instead of a good array.
KINDS = ["good"] * 6 + ["none", "dtype", "short", "long", "2d", "noncontig", "readonly", "list", "scalar"]


def spoil(a, kind):
    if kind == "good" or not isinstance(a, np.ndarray):  # already spoilt (None, a list): as it is
        return a
    if kind == "none":
        return None
    if kind == "dtype":
        other = {np.dtype(np.float32): np.float64, np.dtype(np.int64): np.int32, np.dtype(np.int32): np.int64,
                 np.dtype(np.uint64): np.int64, np.dtype(np.uint8): np.int32, np.dtype(np.uint16): np.float64}
        return a.astype(other.get(a.dtype, np.float32))
    if kind == "short":
        return np.ascontiguousarray(a[:-1]) if a.ndim else a
    if kind == "long":
        return np.concatenate([a, a[:1]]) if a.ndim and len(a) else np.zeros((1,) + a.shape[1:], a.dtype)
    if kind == "2d":
        return a[None]
    if kind == "noncontig":
        return np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim and a.shape[-1] > 1 else a
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if kind == "list":
        return a.tolist()
    return np.asarray(a.flat[0] if a.size else 0, a.dtype)  # a 0-d array


# ---------------------------------------------------------------------------------------
# Fixtures: a valid call of each kind and what it returns, to check after every fuzzed call.

def sampler_args(batch, vocab, **override):
    """_C.Sampler's arguments for `batch` rows (arrays of max(batch, 0)), overridden by name."""
    b = max(batch, 0)
    args = dict(batch=batch, vocab=vocab, seeds=np.arange(b, dtype=np.uint64), steps=np.zeros(b, np.uint64),
                temperature=np.ones(b, np.float32), top_k=np.zeros(b, np.int32),
                top_p=np.ones(b, np.float32), min_p=np.zeros(b, np.float32),
                repetition_penalty=np.ones(b, np.float32), presence_penalty=np.zeros(b, np.float32),
                frequency_penalty=np.zeros(b, np.float32), history=None, history_offsets=None, prompt_lens=None,
                bias_ids=None, bias_values=None, bias_offsets=None, num_logprobs=0, logprobs=True,
                overwrite_logits=False)
    args.update(override)
    return args


VALID_LOGITS = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)


def valid_sample():
    return ops.sample(VALID_LOGITS, seeds=np.arange(3, dtype=np.uint64), steps=np.zeros(3, np.uint64), temperature=0.8,
                      top_k=10, top_p=0.9, min_p=0.0, repetition_penalty=1.2, presence_penalty=0.0,
                      frequency_penalty=0.1, history=np.array([1, 2, 3], np.int64),
                      history_offsets=np.array([0, 1, 2, 3], np.int64), num_logprobs=2)


VALID_SAMPLE = valid_sample()


def check_sampler_works():
    got = valid_sample()
    for expected, field in zip(VALID_SAMPLE[:4], got[:4]):
        np.testing.assert_array_equal(field, expected)
    assert got.errors == {}


def decode_inputs(rng):
    q = rng.standard_normal((2, 4, 16)).astype(np.float32)
    k = rng.standard_normal((3, 4, 2, 16)).astype(np.float32)
    v = rng.standard_normal((3, 4, 2, 16)).astype(np.float32)
    return q, k, v, np.array([[2, 0], [1, 2]], np.int32), np.array([7, 3], np.int32)


DECODE = decode_inputs(np.random.default_rng(1))
VALID_DECODE = ops.attention_decode(*DECODE)


def check_attention_works():
    np.testing.assert_array_equal(ops.attention_decode(*DECODE), VALID_DECODE)


CONFIG = dict(vocab_size=11, n_positions=16, n_embd=8, n_layer=2, n_head=2)
BLOCK_SIZE, NUM_BLOCKS = 4, 8


def gpt_weights(config, seed=0):
    rng = np.random.default_rng(seed)
    c = config["n_embd"]
    shapes = {"transformer.wte.weight": (config["vocab_size"], c), "transformer.wpe.weight": (config["n_positions"], c),
              "transformer.ln_f.weight": (c,), "transformer.ln_f.bias": (c,)}
    for i in range(config["n_layer"]):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.weight": (c,), p + "ln_1.bias": (c,), p + "ln_2.weight": (c,), p + "ln_2.bias": (c,),
                       p + "attn.c_attn.weight": (c, 3 * c), p + "attn.c_attn.bias": (3 * c,),
                       p + "attn.c_proj.weight": (c, c), p + "attn.c_proj.bias": (c,),
                       p + "mlp.c_fc.weight": (c, 4 * c), p + "mlp.c_fc.bias": (4 * c,),
                       p + "mlp.c_proj.weight": (4 * c, c), p + "mlp.c_proj.bias": (c,)})
    return {name: (0.3 * rng.standard_normal(shape)).astype(np.float32) for name, shape in shapes.items()}


MODEL = _C.GptModel(CONFIG, gpt_weights(CONFIG))
CACHE = _C.KvCache(CONFIG["n_layer"], CONFIG["n_head"], CONFIG["n_embd"] // CONFIG["n_head"], BLOCK_SIZE, NUM_BLOCKS)
CACHE.allocate(NUM_BLOCKS)  # every block owned: the fuzzed steps may name any of them


def prompt_step(tokens=(3, 1, 4), block=5):
    """A prompt of its own (attends to nothing but itself): the same logits whatever the cache holds."""
    n = len(tokens)
    return [np.array(tokens, np.int64), np.arange(n, dtype=np.int64), np.array([0, n], np.int32),
            np.array([n], np.int32), np.array([1], np.uint8), np.array([[block]], np.int32)]


def forward(step, cache=CACHE):
    logits = np.empty((len(step[2]) - 1, CONFIG["vocab_size"]), np.float32)
    MODEL.forward(*step, cache, logits)
    return logits


VALID_FORWARD = forward(prompt_step())


def check_model_works():
    np.testing.assert_array_equal(forward(prompt_step()), VALID_FORWARD)


# ---------------------------------------------------------------------------------------
# Regressions: each of these killed the process.

def test_sample_with_logit_bias_offsets_none_raises():
    logits = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"logit_bias offsets: expected C-contiguous int64 \(batch \+ 1,\), got None"):
        ops.sample(logits, seeds=0, steps=0, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                   presence_penalty=0.0, frequency_penalty=0.0,
                   logit_bias=(np.array([1], np.int64), np.array([1.0], np.float32), None))
    check_sampler_works()


def test_native_sampler_bias_offsets_none_raises():
    with pytest.raises(ValueError, match="logit_bias offsets: .* got None"):
        _C.Sampler(**sampler_args(2, 5, bias_ids=np.array([1], np.int64), bias_values=np.ones(1, np.float32)))
    with pytest.raises(ValueError, match="logit_bias values: .* got None"):
        _C.Sampler(**sampler_args(2, 5, bias_ids=np.array([1], np.int64), bias_offsets=np.array([0, 1, 1], np.int64)))
    with pytest.raises(ValueError, match="history and history_offsets: give both or neither"):
        _C.Sampler(**sampler_args(2, 5, history=np.array([1], np.int64), history_offsets=None,
                                  prompt_lens=np.zeros(2, np.int64)))
    check_sampler_works()


def test_attention_decode_with_an_empty_batch_or_no_heads():
    q, k, v, _, _ = DECODE
    empty = ops.attention_decode(q[:0], k, v, np.zeros((0, 2), np.int32), np.zeros(0, np.int32))
    assert empty.shape == (0, 4, 16)  # nothing to attend: a valid empty result
    with pytest.raises(ValueError, match="q: n_heads must be >= 1, got 0"):
        ops.attention_decode(q[:, :0], k, v, DECODE[3], DECODE[4])
    with pytest.raises(ValueError, match="q: n_heads must be >= 1, got 0"):
        ops.attention_prefill(np.zeros((3, 0, 16), np.float32), k[0, :3], v[0, :3], np.array([0, 3], np.int32))
    check_attention_works()


def test_forward_with_a_cache_of_fewer_layers_raises():
    small = _C.KvCache(1, CONFIG["n_head"], 4, BLOCK_SIZE, NUM_BLOCKS)
    small.allocate(NUM_BLOCKS)
    with pytest.raises(ValueError, match="cache: made for n_layer 1, n_head 2, head_dim 4; the model has 2, 2, 4"):
        forward(prompt_step(), small)
    check_model_works()


def test_forward_decode_row_with_context_zero_raises():
    step = [np.array([3], np.int64), np.array([-1], np.int64), np.array([0, 1], np.int32), np.array([0], np.int32),
            np.array([0], np.uint8), np.array([[0]], np.int32)]
    with pytest.raises(ValueError, match="context_lens: sequence 0 is 0, expected >= 1"):
        forward(step)
    check_model_works()


def test_kv_cache_whose_size_overflows_raises():
    with pytest.raises(OverflowError, match="KV cache size: .* overflows a 64-bit size"):
        _C.KvCache(2**20, 2**20, 2**20, 2**20, 2**20)
    with pytest.raises(ValueError, match="num_blocks must be <= 2\\*\\*31 - 1"):
        _C.KvCache(1, 1, 1, 1, 2**31)
    check_model_works()


def test_forward_negative_context_with_a_huge_block_id_raises():
    step = [np.array([3], np.int64), np.array([-7], np.int64), np.array([0, 1], np.int32), np.array([-6], np.int32),
            np.array([0], np.uint8), np.array([[2**31 - 1]], np.int32)]
    with pytest.raises(ValueError, match="context_lens: sequence 0 is -6"):
        forward(step)
    check_model_works()


def test_forward_with_non_monotone_cu_seqlens_raises():
    # Sequence 0 spanned 100 tokens of 2: positions read past the array before any check failed.
    step = [np.array([3, 4], np.int64), np.array([0, 1], np.int64), np.array([0, 100, 2], np.int32),
            np.array([1, 1], np.int32), np.array([1, 1], np.uint8), np.array([[0], [1]], np.int32)]
    with pytest.raises(ValueError, match=r"cu_seqlens: not monotone at sequence 1 \(100 then 2\)"):
        forward(step)
    check_model_works()


# ---------------------------------------------------------------------------------------
# Fuzzing.

ROW_VALUES = {
    "temperature": [1.0, 0.0, -1.0, np.nan, np.inf],
    "top_k": [0, 3, -1, 2**31 - 1],
    "top_p": [1.0, 0.5, 0.0, np.nan, 2.0],
    "min_p": [0.0, 0.1, -0.1, np.nan],
    "repetition_penalty": [1.0, 1.3, 1e-39, 0.0, np.inf, 1e38],
    "presence_penalty": [0.0, 0.5, -3e38, np.nan],
    "frequency_penalty": [0.0, 0.5, 3e38, np.inf],
}


@FUZZ
@given(data=st.data())
def test_sampler_fuzz(data):
    draw = data.draw
    batch = draw(st.sampled_from([3, 3, 1, 0, -1]))
    vocab = draw(st.sampled_from([6, 6, 6, 6, 1, 0, -1, 2**31]))
    b, v = max(batch, 0), 6 if vocab > 6 or vocab < 1 else vocab
    override = {}
    for name, values in ROW_VALUES.items():
        dtype = np.int32 if name == "top_k" else np.float32
        # Mostly the first (valid) value: a row value out of range stops the call at once.
        override[name] = np.array([draw(st.sampled_from(values)) if draw(st.integers(0, 5)) == 0 else values[0]
                                   for _ in range(b)], dtype)
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(0, 3), min_size=b, max_size=b))
        low, high = (-1, v) if draw(st.integers(0, 3)) == 0 else (0, v - 1)  # ids out of range, or not
        override["history"] = np.array(draw(st.lists(st.integers(low, high), min_size=sum(lengths),
                                                     max_size=sum(lengths))), np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if draw(st.integers(0, 3)) == 0:
            offsets[draw(st.integers(0, b))] = draw(st.sampled_from([-1, 2**40, 1]))
        override["history_offsets"] = offsets
        override["prompt_lens"] = draw(st.sampled_from([None, np.array(lengths, np.int64), np.array(lengths, np.int64),
                                                        np.full(b, -1, np.int64), np.full(b, 9, np.int64)]))
    if draw(st.booleans()):
        m = draw(st.integers(0, 4))
        low, high = (-1, v) if draw(st.integers(0, 3)) == 0 else (0, v - 1)
        override["bias_ids"] = np.array(draw(st.lists(st.integers(low, high), min_size=m, max_size=m)), np.int64)
        values = [1.0, -np.inf, 3e38] + ([np.inf, np.nan] if draw(st.integers(0, 3)) == 0 else [])
        override["bias_values"] = np.array(draw(st.lists(st.sampled_from(values), min_size=m, max_size=m)), np.float32)
        override["bias_offsets"] = np.array(sorted(draw(st.lists(st.integers(0, m), min_size=b + 1, max_size=b + 1))),
                                            np.int64)
        if b >= 0 and len(override["bias_offsets"]):
            override["bias_offsets"][0], override["bias_offsets"][-1] = 0, m
    override["num_logprobs"] = draw(st.sampled_from([0, 0, 0, 2, 2, -1, 21, 10**12]))
    override["overwrite_logits"] = draw(st.booleans())
    args = sampler_args(batch, vocab, **override)
    for name in draw(st.lists(st.sampled_from(sorted(args)), max_size=2)):  # spoil one or two arguments
        if isinstance(args[name], np.ndarray):
            args[name] = spoil(args[name], draw(st.sampled_from(KINDS)))
    try:
        sampler = _C.Sampler(**args)
    except ALLOWED:
        sampler = None
    if sampler is not None:
        logits = (np.random.default_rng(draw(st.integers(0, 9))).standard_normal((b, v)) * 3).astype(np.float32)
        for _ in range(draw(st.integers(0, 3))):
            if b:
                logits[draw(st.integers(0, b - 1)), draw(st.integers(0, v - 1))] = draw(
                    st.sampled_from([np.nan, np.inf, -np.inf, 3e38]))
        logits = spoil(logits, draw(st.sampled_from(KINDS)))
        for _ in range(2):  # twice: the second call sees the histories and steps the first moved
            errors = tolerated(sampler.sample, logits)
            if errors is None:
                break
            tokens = sampler.outputs[0]
            for r in range(b):
                assert (tokens[r] == -1) if r in errors else (0 <= tokens[r] < v), (r, errors)
    check_sampler_works()


@FUZZ
@given(data=st.data())
def test_attention_fuzz(data):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 9)))
    batch = draw(st.sampled_from([2, 2, 1, 0]))
    n_heads, n_kv = draw(st.sampled_from([(4, 2), (4, 2), (2, 2), (0, 1), (2, 0), (3, 2)]))
    head_dim = draw(st.sampled_from([8, 8, 1, 0, 513]))
    num_blocks, block_size, max_blocks = (draw(st.sampled_from(s)) for s in ([3, 3, 1, 0], [4, 4, 1, 0], [2, 2, 0]))
    bf16 = draw(st.booleans())
    def kv(shape):
        x = rng.standard_normal(shape).astype(np.float32)
        return ops.to_bf16(x) if bf16 else x

    q = rng.standard_normal((batch, n_heads, head_dim)).astype(np.float32)
    k, v = kv((num_blocks, block_size, n_kv, head_dim)), kv((num_blocks, block_size, n_kv, head_dim))
    table = rng.integers(0, max(num_blocks, 1), (batch, max_blocks)).astype(np.int32)
    lens = rng.integers(1, max(max_blocks * block_size, 1) + 1, batch).astype(np.int32)
    if batch and max_blocks and draw(st.booleans()):
        table[draw(st.integers(0, batch - 1)), draw(st.integers(0, max_blocks - 1))] = draw(
            st.sampled_from([-1, num_blocks, 2**31 - 1, -2**31]))
    if batch and draw(st.booleans()):
        lens[draw(st.integers(0, batch - 1))] = draw(st.sampled_from([0, -1, 2**31 - 1, max_blocks * block_size + 1]))
    out = np.empty((batch, n_heads, head_dim), np.float32)
    args = [q, k, v, table, lens, draw(st.sampled_from([np.nan, 0.5, np.inf])), out]
    for i in draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 6]), max_size=2)):
        args[i] = spoil(args[i], draw(st.sampled_from(KINDS)))
    if tolerated(_C.attention_decode, *args) is not None:
        assert np.isfinite(out).all()
    # Prefill over the same heads: packed sequences, cu_seqlens spoilt or not.
    lengths = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    tokens = sum(lengths)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    if draw(st.booleans()):
        cu[draw(st.integers(0, len(cu) - 1))] = draw(st.sampled_from([-1, tokens + 1, 2**31 - 1]))
    pq = rng.standard_normal((tokens, n_heads, head_dim)).astype(np.float32)
    pk = kv((tokens, n_kv, head_dim))
    pout = np.empty_like(pq)
    args = [pq, pk, pk.copy(), cu, np.nan, pout]
    for i in draw(st.lists(st.sampled_from([0, 1, 2, 3, 5]), max_size=2)):
        args[i] = spoil(args[i], draw(st.sampled_from(KINDS)))
    if tolerated(_C.attention_prefill, *args) is not None:
        assert np.isfinite(pout).all()
    check_attention_works()


CACHES = {
    "model's": CACHE,
    "fewer layers": _C.KvCache(1, 2, 4, BLOCK_SIZE, NUM_BLOCKS),
    "more layers": _C.KvCache(3, 2, 4, BLOCK_SIZE, NUM_BLOCKS),
    "other heads": _C.KvCache(2, 1, 8, BLOCK_SIZE, NUM_BLOCKS),
    "fewer blocks": _C.KvCache(2, 2, 4, BLOCK_SIZE, 2),
    "nothing allocated": _C.KvCache(2, 2, 4, BLOCK_SIZE, NUM_BLOCKS),
}
for name, cache in CACHES.items():
    if name != "nothing allocated" and cache is not CACHE:
        cache.allocate(cache.num_blocks)
NASTY = [-2**31, -1, 0, 1, 3, 4, 7, 8, 11, 15, 16, 17, 2**31 - 1]


def valid_step(draw):
    """Decoding rows (one token each, context 1..16) first, then whole prompts of 1..4 tokens."""
    decoding = draw(st.integers(0, 2))
    prompts = draw(st.integers(0 if decoding else 1, 2))
    contexts = [draw(st.integers(1, 16)) for _ in range(decoding)] + [draw(st.integers(1, 4)) for _ in range(prompts)]
    lengths = [1] * decoding + contexts[decoding:]
    tokens = [draw(st.integers(0, CONFIG["vocab_size"] - 1)) for _ in range(sum(lengths))]
    positions = [p for c, n in zip(contexts, lengths) for p in range(c - n, c)]
    table = [[draw(st.integers(0, NUM_BLOCKS - 1)) for _ in range(4)] for _ in contexts]
    return [np.array(tokens, np.int64), np.array(positions, np.int64),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32), np.array(contexts, np.int32),
            np.array([0] * decoding + [1] * prompts, np.uint8), np.array(table, np.int32)]


@FUZZ
@given(data=st.data())
def test_gpt_forward_fuzz(data):
    draw = data.draw
    step = valid_step(draw)
    for _ in range(draw(st.integers(0, 2))):  # a nasty value somewhere
        field = draw(st.integers(0, 5))
        if step[field].size:
            flat = step[field].reshape(-1)
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(NASTY)) if field != 4 else 1 - flat[0]
    for field in draw(st.lists(st.integers(0, 6), max_size=1)):  # or a spoilt array
        if field < 6:
            step[field] = spoil(step[field], draw(st.sampled_from(KINDS)))
    cache = CACHES[draw(st.sampled_from(sorted(CACHES)))] if draw(st.booleans()) else CACHE
    num_seqs = len(step[2]) - 1 if isinstance(step[2], np.ndarray) and step[2].ndim == 1 else 1
    logits = spoil(np.empty((max(num_seqs, 0), CONFIG["vocab_size"]), np.float32),
                   draw(st.sampled_from(KINDS + ["good"] * 10)))
    if draw(st.integers(0, 9)) == 0:
        cache = None
    try:
        MODEL.forward(*step, cache, logits)
        assert np.isfinite(logits).all()
    except ALLOWED:
        pass
    check_model_works()


@FUZZ
@given(sizes=st.lists(st.sampled_from([1, 2, 3, 3, 0, -1, 2**62, 2**63 - 1, 2**64, 1.5]), min_size=5,
                      max_size=5),
       counts=st.lists(st.sampled_from([0, 1, 2, -1, 10**6]), max_size=3),
       released=st.lists(st.lists(st.sampled_from([0, 1, 2, -1, 9, 2**31 - 1, 2**31]), max_size=3), max_size=3))
def test_kv_cache_fuzz(sizes, counts, released):
    # Only sizes whose product is small or overflows: a valid product of terabytes would be
    # a real allocation attempt (a MemoryError outside a sanitizer, an abort inside one).
    cache = tolerated(_C.KvCache, *sizes)
    if cache is not None:
        assert cache.num_blocks == sizes[4]
        for count in counts:
            try:
                blocks = cache.allocate(count)
                assert len(blocks) == count and all(0 <= b < cache.num_blocks for b in blocks)
            except RuntimeError as error:  # more than the free blocks: the scheduler's signal
                assert "free" in str(error)
            except ALLOWED:
                pass
        for blocks in released:
            tolerated(cache.release, blocks)
        assert 0 <= cache.free_blocks <= cache.num_blocks
    check_model_works()


@FUZZ
@given(data=st.data())
def test_gpt_model_config_fuzz(data):
    draw = data.draw
    config = dict(CONFIG)
    for key in draw(st.lists(st.sampled_from(sorted(CONFIG) + ["layer_norm_epsilon"]), max_size=2)):
        config[key] = draw(st.sampled_from([0, -1, 3, 2**62, 2**63, 1.5, "8", None, True]))
    weights = gpt_weights(CONFIG)
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(weights)))
        weights[name] = spoil(weights[name], draw(st.sampled_from(KINDS[6:])))
    dtype = draw(st.sampled_from(["float32", "bfloat16", "int8", "float16"]))
    model = tolerated(_C.GptModel, config, weights, dtype)
    if model is not None and config == CONFIG:
        logits = np.empty((1, CONFIG["vocab_size"]), np.float32)
        model.forward(*prompt_step(), CACHE, logits)
        assert np.isfinite(logits).all()
    check_model_works()


@FUZZ
@given(data=st.data())
def test_block_ops_fuzz(data):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 9)))
    k, n, m = (draw(st.sampled_from(s)) for s in ([3, 3, 0, 1, 65], [5, 5, 0, 1, 64], [2, 2, 0, 1]))
    weight = spoil(rng.standard_normal((k, n)).astype(np.float32), draw(st.sampled_from(KINDS)))
    bias = draw(st.sampled_from([None, rng.standard_normal(n).astype(np.float32), np.zeros(n + 1, np.float32)]))
    layer = tolerated(_C.Linear, weight, bias, draw(st.sampled_from(["float32", "bfloat16", "int8", "int4"])))
    if layer is not None:
        x = spoil(rng.standard_normal((m, layer.k)).astype(np.float32), draw(st.sampled_from(KINDS)))
        out = spoil(np.empty((m, layer.n), np.float32), draw(st.sampled_from(KINDS)))
        tolerated(layer.forward, x, out, draw(st.booleans()))
    rows, dim = draw(st.sampled_from([2, 0, 1])), draw(st.sampled_from([4, 0, 1]))
    h = rng.standard_normal((rows, dim)).astype(np.float32)
    args = [h, draw(st.sampled_from([None, h.copy()])), np.ones(dim, np.float32), np.zeros(dim, np.float32),
            np.empty_like(h), draw(st.sampled_from([1e-5, 0.0, -1.0, np.nan]))]
    for i in draw(st.lists(st.sampled_from([0, 1, 2, 3, 4]), max_size=2)):
        if args[i] is not None:
            args[i] = spoil(args[i], draw(st.sampled_from(KINDS)))
    tolerated(_C.add_layer_norm, *args)
    tolerated(_C.gelu_tanh, spoil(rng.standard_normal(draw(st.sampled_from([0, 1, 7]))).astype(np.float32),
                                  draw(st.sampled_from(KINDS))))
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    y = np.empty((3, 4), np.float32)
    _C.Linear(np.eye(4, dtype=np.float32), None, "float32").forward(x, y, False)
    np.testing.assert_array_equal(y, x)


@FUZZ
@given(data=st.data())
def test_image_and_latent_fuzz(data):
    draw = data.draw
    n, dim = draw(st.sampled_from([2, 0, 1])), draw(st.sampled_from([5, 0, 1]))
    out = spoil(np.empty((n, dim), np.float32), draw(st.sampled_from(KINDS)))
    seed = draw(st.sampled_from([0, 2**64 - 1, -1, 2**64]))
    truncation = draw(st.sampled_from([np.inf, 0.5, 0.0, -1.0, np.nan]))
    device = draw(st.sampled_from(["cpu", "cpu", "cuda", "tpu"]))
    tolerated(_C.sample_latent, out, seed, draw(st.sampled_from([0, 2**64 - 1])), truncation, device)
    a = np.ones(dim, np.float32)
    t = np.linspace(0, 1, n, dtype=np.float32)
    args = [a, a * 2, t, np.empty((n, dim), np.float32)]
    for i in draw(st.lists(st.sampled_from([0, 1, 2, 3]), max_size=2)):
        args[i] = spoil(args[i], draw(st.sampled_from(KINDS)))
    tolerated(_C.slerp, *args)
    shape = (n, draw(st.sampled_from([1, 3, 0])), draw(st.sampled_from([2, 0])), dim)
    images = spoil(np.zeros(shape, np.float32), draw(st.sampled_from(KINDS)))
    pixels = spoil(np.empty((shape[0], shape[2], shape[3], shape[1]), np.uint8), draw(st.sampled_from(KINDS)))
    tolerated(_C.images_to_uint8, images, pixels, device)
    expected = ops.sample_latent(2, 5, 7)
    np.testing.assert_array_equal(ops.sample_latent(2, 5, 7), expected)
    assert ops.images_to_uint8(np.zeros((1, 1, 2, 2), np.float32)).tolist() == [[[[128], [128]], [[128], [128]]]]


# _C.LstmModel and _C.LstmState: the native LSTM's step, config and state slots.

LSTM_CONFIG = dict(vocab_size=11, n_embd=6, hidden_size=5, n_layer=2, context=16)
LSTM_SLOTS = 4


def lstm_weights(config, seed=0):
    rng = np.random.default_rng(seed)
    v, e, h = config["vocab_size"], config["n_embd"], config["hidden_size"]
    shapes = {"embedding.weight": (v, e), "head.weight": (v, h), "head.bias": (v,)}
    for i in range(config["n_layer"]):
        shapes.update({f"lstm.weight_ih_l{i}": (4 * h, e if i == 0 else h), f"lstm.weight_hh_l{i}": (4 * h, h),
                       f"lstm.bias_ih_l{i}": (4 * h,), f"lstm.bias_hh_l{i}": (4 * h,)})
    return {name: (0.5 * rng.standard_normal(shape)).astype(np.float32) for name, shape in shapes.items()}


LSTM_MODEL = _C.LstmModel(LSTM_CONFIG, lstm_weights(LSTM_CONFIG))
LSTM_STATE = _C.LstmState(LSTM_CONFIG["n_layer"], LSTM_CONFIG["hidden_size"], LSTM_CONFIG["context"], LSTM_SLOTS)
LSTM_STATE.allocate(LSTM_SLOTS)  # every slot owned: the fuzzed steps may name any of them
WRONG_STATES = {"fewer layers": _C.LstmState(1, 5, 16, LSTM_SLOTS), "other hidden size": _C.LstmState(2, 4, 16, 4),
                "other context": _C.LstmState(2, 5, 8, LSTM_SLOTS), "nothing allocated": _C.LstmState(2, 5, 16, 4)}
for _name, _state in WRONG_STATES.items():
    if _name != "nothing allocated":
        _state.allocate(_state.num_blocks)


def lstm_forward(step, every_token=False):
    rows = len(step[0]) if every_token else len(step[2]) - 1
    logits = np.empty((rows, LSTM_CONFIG["vocab_size"]), np.float32)
    LSTM_MODEL.forward(*step, LSTM_STATE, logits, every_token)
    return logits


VALID_LSTM = lstm_forward(prompt_step(block=2), every_token=True)


def check_lstm_works():
    np.testing.assert_array_equal(lstm_forward(prompt_step(block=2), every_token=True), VALID_LSTM)


def test_lstm_rejects_bad_configs_states_and_steps():
    with pytest.raises(ValueError, match="weights: missing 'lstm.bias_ih_l2'"):
        _C.LstmModel({**LSTM_CONFIG, "n_layer": 3}, lstm_weights(LSTM_CONFIG))
    with pytest.raises(ValueError, match=r"lstm.weight_hh_l0: expected C-contiguous float32 \(20, 5\), got float32 "
                                         r"\(20, 4\)"):
        _C.LstmModel(LSTM_CONFIG, {**lstm_weights(LSTM_CONFIG), "lstm.weight_hh_l0": np.zeros((20, 4), np.float32)})
    with pytest.raises(TypeError, match=r"config\['context'\]: expected an integer"):
        _C.LstmModel({**LSTM_CONFIG, "context": 1.5}, lstm_weights(LSTM_CONFIG))
    with pytest.raises(ValueError, match="config: missing 'hidden_size'"):
        _C.LstmModel({k: v for k, v in LSTM_CONFIG.items() if k != "hidden_size"}, lstm_weights(LSTM_CONFIG))
    with pytest.raises(ValueError, match="LSTM config: sizes must be >= 1"):
        _C.LstmModel({**LSTM_CONFIG, "context": 0}, lstm_weights(LSTM_CONFIG))
    with pytest.raises(ValueError, match="LSTM state: every size must be >= 1"):
        _C.LstmState(2, 5, 16, 0)
    with pytest.raises(ValueError, match="state: made for n_layer 1, hidden_size 5, context 16; the model has 2, 5, "
                                         "16"):
        LSTM_MODEL.forward(*prompt_step(block=0), WRONG_STATES["fewer layers"], np.empty((1, 11), np.float32))
    with pytest.raises(TypeError, match="state: expected an LstmState, got None"):
        LSTM_MODEL.forward(*prompt_step(), None, np.empty((1, 11), np.float32))
    with pytest.raises(ValueError, match=r"logits: expected C-contiguous float32 \(3, 11\), got float32 \(1, 11\)"):
        LSTM_MODEL.forward(*prompt_step(block=0), LSTM_STATE, np.empty((1, 11), np.float32), True)
    with pytest.raises(ValueError, match="LSTM state: block 7 is not an allocated block"):
        LSTM_MODEL.forward(*prompt_step(block=7), LSTM_STATE, np.empty((1, 11), np.float32))
    with pytest.raises(ValueError, match="step: sequence 0 has 17 tokens, over the context of 16"):
        LSTM_MODEL.forward(*prompt_step(tokens=[1] * 17, block=0), LSTM_STATE, np.empty((1, 11), np.float32))
    with pytest.raises(RuntimeError, match="LSTM state: 5 blocks wanted, 4 free"):
        _C.LstmState(2, 5, 16, 4).allocate(5)
    check_lstm_works()


@FUZZ
@given(data=st.data())
def test_lstm_forward_fuzz(data):
    draw = data.draw
    step = valid_step(draw)
    step[5] = step[5] % LSTM_SLOTS  # a slot a sequence: the first column of its table
    for _ in range(draw(st.integers(0, 2))):  # a nasty value somewhere
        field = draw(st.integers(0, 5))
        if step[field].size:
            flat = step[field].reshape(-1)
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(NASTY)) if field != 4 else 1 - flat[0]
    for field in draw(st.lists(st.integers(0, 6), max_size=1)):  # or a spoilt array
        if field < 6:
            step[field] = spoil(step[field], draw(st.sampled_from(KINDS)))
    state = WRONG_STATES[draw(st.sampled_from(sorted(WRONG_STATES)))] if draw(st.booleans()) else LSTM_STATE
    every_token = draw(st.booleans())
    rows = (len(step[0]) if isinstance(step[0], np.ndarray) and step[0].ndim == 1 else 1) if every_token else (
        len(step[2]) - 1 if isinstance(step[2], np.ndarray) and step[2].ndim == 1 else 1)
    logits = spoil(np.empty((max(rows, 0), LSTM_CONFIG["vocab_size"]), np.float32),
                   draw(st.sampled_from(KINDS + ["good"] * 10)))
    if draw(st.integers(0, 9)) == 0:
        state = None
    try:
        LSTM_MODEL.forward(*step, state, logits, every_token)
        assert np.isfinite(logits).all()
    except ALLOWED:
        pass
    check_lstm_works()


@FUZZ
@given(data=st.data())
def test_lstm_model_and_state_fuzz(data):
    draw = data.draw
    config = dict(LSTM_CONFIG)
    for key in draw(st.lists(st.sampled_from(sorted(LSTM_CONFIG)), max_size=2)):
        config[key] = draw(st.sampled_from([0, -1, 3, 2**62, 2**63, 1.5, "8", None, True]))
    weights = lstm_weights(LSTM_CONFIG)
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(weights)))
        weights[name] = spoil(weights[name], draw(st.sampled_from(KINDS[6:])))
    dtype = draw(st.sampled_from(["float32", "bfloat16", "int8", "float16"]))
    model = tolerated(_C.LstmModel, config, weights, dtype)
    if model is not None and config == LSTM_CONFIG:
        logits = np.empty((1, LSTM_CONFIG["vocab_size"]), np.float32)
        model.forward(*prompt_step(block=1), LSTM_STATE, logits)
        assert np.isfinite(logits).all()
    # Only sizes whose product is small or overflows (a valid terabyte state would be allocated).
    sizes = [draw(st.sampled_from([2, 5, 16, 0, -1, 2**62, 2**63 - 1, 2**64])) for _ in range(4)]
    state = tolerated(_C.LstmState, *sizes)
    if state is not None:
        assert state.num_blocks == sizes[3] and state.free_blocks == sizes[3]
        assert tolerated(state.release, [draw(st.sampled_from([0, -1, 2**31 - 1]))]) is None
    check_lstm_works()


# _C.Generation: any sequence of add / remove / rewind / step, with nasty arguments.

GOOD_REQUEST = dict(prompt=[3, 1, 4], seed=5, temperature=0.8, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.2,
                    presence_penalty=0.0, frequency_penalty=0.0, bias_ids=[], bias_values=[], eos_id=-1,
                    max_new_tokens=6, num_logprobs=-1)
REQUEST_VALUES = dict(  # what a caller might pass for each field: the good value first, then bad or odd ones
    prompt=st.lists(st.sampled_from([0, 3, 10, 10, -1, 11, 2**31, 2**63 - 1]), max_size=20),
    seed=st.sampled_from([5, 0, 2**64 - 1, -1, 2**64]),
    temperature=st.sampled_from([0.8, 0.0, 1e30, 1e-46, -1.0, np.nan, np.inf]),
    top_k=st.sampled_from([0, 3, -1, 2**31 - 1, 2**31]),
    top_p=st.sampled_from([1.0, 0.9, 1e-46, 0.0, 2.0, np.nan]),
    min_p=st.sampled_from([0.0, 0.1, 1.0, -0.1, np.nan]),
    repetition_penalty=st.sampled_from([1.2, 1.0, 10.0, 1e-39, 1e-46, 0.0, np.nan]),
    presence_penalty=st.sampled_from([0.0, 0.5, -2.0, 1e38, np.inf, np.nan]),
    frequency_penalty=st.sampled_from([0.0, 0.5, -2.0, 1e38, np.inf, np.nan]),
    bias_ids=st.lists(st.sampled_from([0, 4, 10, -1, 11, 2**63]), max_size=3),
    bias_values=st.lists(st.sampled_from([2.0, -np.inf, 1e38, np.inf, np.nan]), max_size=3),
    eos_id=st.sampled_from([-1, 0, 4, 10, 11, -2]),
    max_new_tokens=st.sampled_from([6, 1, 3, 12, 0, -1, 2**62, 2**63 - 1]),
    num_logprobs=st.sampled_from([-1, 0, 3, 11, 12, 21, -2]))


def fresh_generation(max_batch_size=4, max_step_tokens=64, family="gpt"):
    if family == "lstm":  # a state slot per row of the batch, as the LSTM backend makes them
        state = _C.LstmState(LSTM_CONFIG["n_layer"], LSTM_CONFIG["hidden_size"], LSTM_CONFIG["context"], 4)
        return _C.Generation(LSTM_MODEL, state, max_batch_size, max_step_tokens)
    cache = _C.KvCache(CONFIG["n_layer"], CONFIG["n_head"], CONFIG["n_embd"] // CONFIG["n_head"], BLOCK_SIZE,
                       NUM_BLOCKS)
    return _C.Generation(MODEL, cache, max_batch_size, max_step_tokens)


def generate_alone(gen, id_):
    """GOOD_REQUEST under `id_`, stepped to its end: its tokens."""
    gen.add(id_, **GOOD_REQUEST)
    tokens = []
    for _ in range(50):
        if not (gen.num_waiting or gen.num_running):
            return tokens
        ids, step_tokens, states, _, errors = gen.step()
        assert errors is None
        tokens += [t for i, t in zip(ids, step_tokens) if i == id_]
    raise AssertionError(f"no end after 50 steps: {tokens}")


EXPECTED_ALONE = {family: generate_alone(fresh_generation(family=family), 0) for family in ("gpt", "lstm")}


@pytest.mark.parametrize("family", ["gpt", "lstm"])
@FUZZ
@given(data=st.data())
def test_generation_fuzz(family, data):
    """Whatever is added, removed, rewound and stepped, in any order: only a clear exception
    for bad arguments, a step that never raises (a row that cannot be drawn fails alone), no
    block leaked once every request is removed, and the same tokens as a fresh Generation
    for a good request afterwards."""
    draw = data.draw
    model = MODEL if family == "gpt" else LSTM_MODEL
    wrong_cache = draw(st.sampled_from([None, _C.KvCache(1, 2, 4, BLOCK_SIZE, NUM_BLOCKS),
                                        _C.KvCache(2, 1, 8, BLOCK_SIZE, NUM_BLOCKS),
                                        *(s for name, s in WRONG_STATES.items() if name != "nothing allocated")]))
    assert tolerated(_C.Generation, model, wrong_cache, 4, 64) is None
    gen = tolerated(fresh_generation, draw(st.sampled_from([4, 1, 2, 0, -1, 2**63])),
                    draw(st.sampled_from([64, 3, 5, 0, -1, 2**63])), family)
    if gen is None:
        return
    ids = st.sampled_from([1, 2, 3, -1, 2**63 - 1])
    for _ in range(draw(st.integers(1, 14))):
        action = draw(st.sampled_from(["add", "add", "add", "step", "step", "step", "remove", "rewind"]))
        if action == "add":
            request = dict(GOOD_REQUEST)
            for field in draw(st.lists(st.sampled_from(sorted(REQUEST_VALUES)), max_size=3)):
                request[field] = draw(REQUEST_VALUES[field])
            tolerated(lambda: gen.add(draw(ids), **request))
        elif action == "remove":
            gen.remove(draw(ids))
        elif action == "rewind":
            tolerated(gen.rewind, draw(ids), draw(st.sampled_from([0, 1, 3, -1, 2**62])))
        else:
            step_ids, tokens, states, _, errors = gen.step()
            for i, token in zip(step_ids, tokens):
                if errors is not None and i in errors:
                    assert errors[i] and token == -1
                else:
                    assert 0 <= token < CONFIG["vocab_size"]
        assert 0 <= gen.free_blocks <= gen.num_blocks
    for i in [1, 2, 3, -1, 2**63 - 1]:
        gen.remove(i)
    assert (gen.num_waiting, gen.num_running, gen.free_blocks) == (0, 0, gen.num_blocks)
    assert generate_alone(gen, 0) == EXPECTED_ALONE[family]
