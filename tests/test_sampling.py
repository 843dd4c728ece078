"""The batched sampler against the numpy reference (tests/reference.py), under every ISA build.

The reference predicts the exact token of every (seed, step) — it draws the same uniform
from numpy's own Philox — so exact token equality checks the kept sets of top_k / top_p /
min_p and the penalties, except where a float32 rounding could flip a decision: such
cases (a cumulative mass or a probability within 1e-5 of its cut) are skipped, and
counted so that a test cannot pass by skipping everything.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import isa
import reference
from aigc_engine import ops
from aigc_engine.errors import AigcError

F32 = np.finfo(np.float32).eps
AMBIGUOUS = 1e-5


def params(batch, **overrides):
    p = dict(seeds=np.arange(batch, dtype=np.uint64), steps=np.zeros(batch, np.uint64),
             temperature=np.ones(batch, np.float32), top_k=np.zeros(batch, np.int32),
             top_p=np.ones(batch, np.float32), min_p=np.zeros(batch, np.float32),
             repetition_penalty=np.ones(batch, np.float32), presence_penalty=np.zeros(batch, np.float32),
             frequency_penalty=np.zeros(batch, np.float32))
    for key, value in overrides.items():
        p[key] = np.full(batch, value, dtype=p[key].dtype) if np.isscalar(value) else value
    return p


def random_logits(rng, batch, vocab, scale=3.0):
    return (rng.standard_normal((batch, vocab)) * scale).astype(np.float32)


def logprob_tolerance(logits, values):
    # The kernel computes x - (max + log(sum)), the sum in float32 chains of at most 64 terms
    # per lane (relative error <= 64 eps + 4 eps for its exp2, whose argument x log2 e - c
    # carries an error of |x| eps), then one float32 rounding of the result.
    return 70 * F32 + 4 * F32 * (np.abs(values) + np.abs(logits).max(axis=-1, keepdims=True))


@isa.EACH
@settings(max_examples=25, deadline=None)
@given(vocab=st.sampled_from([1, 2, 7, 33, 101, 1000]), batch=st.integers(1, 6), seed=st.integers(0, 2**32 - 1),
       temperature=st.sampled_from([0.3, 0.8, 1.0, 2.5]), top_k=st.sampled_from([0, 1, 3, 10, 50, 2000]),
       top_p=st.sampled_from([1.0, 0.95, 0.7, 0.3]), min_p=st.sampled_from([0.0, 0.05, 0.3]))
def test_tokens_match_reference_filters(isa_name, vocab, batch, seed, temperature, top_k, top_p, min_p):
    rng = np.random.default_rng(seed)
    logits = random_logits(rng, batch, vocab)
    steps = rng.integers(0, 2**63, batch, dtype=np.uint64)
    seeds = rng.integers(0, 2**64 - 1, batch, dtype=np.uint64)
    kwargs = params(batch, seeds=seeds, steps=steps, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    with isa.forced(isa_name):
        result = ops.sample(logits, **kwargs)
    for r in range(batch):
        token, gap = reference.sample_token(logits[r], int(seeds[r]), int(steps[r]), temperature, top_k,
                                            top_p, min_p)
        if gap > AMBIGUOUS:
            assert result.tokens[r] == token, (isa_name, r)


@isa.EACH
def test_exact_tokens_over_many_seeds_and_every_filter(isa_name):
    """Hundreds of draws per configuration: a kept set one token too large or small shifts
    the inverse CDF and shows up as a different token for some seed."""
    rng = np.random.default_rng(1)
    vocab, batch = 257, 400
    row = random_logits(rng, 1, vocab, 2.0)
    logits = np.repeat(row, batch, axis=0)
    checked = 0
    for temperature, top_k, top_p, min_p in [(0.8, 50, 0.9, 0.0), (1.0, 0, 0.9, 0.0), (1.3, 0, 1.0, 0.02),
                                             (0.7, 20, 1.0, 0.1), (1.0, 0, 1.0, 0.0), (2.0, 100, 0.5, 0.01)]:
        kwargs = params(batch, steps=np.arange(batch, dtype=np.uint64), seeds=np.full(batch, 7, np.uint64),
                        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        with isa.forced(isa_name):
            tokens = ops.sample(logits, **kwargs).tokens
        for r in range(batch):
            token, gap = reference.sample_token(row[0], 7, r, temperature, top_k, top_p, min_p)
            if gap > AMBIGUOUS:
                assert tokens[r] == token, (isa_name, temperature, top_k, top_p, min_p, r)
                checked += 1
    assert checked > 0.95 * 6 * batch


@isa.EACH
def test_large_vocab_matches_reference(isa_name):
    rng = np.random.default_rng(2)
    batch, vocab = 6, 50257
    logits = random_logits(rng, batch, vocab)
    kwargs = params(batch, seeds=rng.integers(0, 2**63, batch, dtype=np.uint64), temperature=0.8,
                    top_k=np.array([50, 0, 0, 1000, 0, 40], np.int32),
                    top_p=np.array([0.9, 0.9, 1.0, 0.95, 1.0, 1.0], np.float32),
                    min_p=np.array([0, 0, 0, 0, 0.05, 0], np.float32))
    with isa.forced(isa_name):
        result = ops.sample(logits, **kwargs, num_logprobs=20)
    for r in range(batch):
        token, gap = reference.sample_token(logits[r], int(kwargs["seeds"][r]), 0, 0.8, int(kwargs["top_k"][r]),
                                            float(kwargs["top_p"][r]), float(kwargs["min_p"][r]))
        if gap > AMBIGUOUS:
            assert result.tokens[r] == token, (isa_name, r)
    expected = reference.log_softmax(logits)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(result.top_ids, top)
    np.testing.assert_allclose(result.top_logprobs, np.take_along_axis(expected, top, 1),
                               rtol=0, atol=logprob_tolerance(logits, expected).max())


@isa.EACH
@pytest.mark.parametrize("vocab", [50257, 4096])
@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, 0, 1.0), (0.8, 50, 0.9), (1.0, 5, 1.0), (0.9, 0, 0.8)])
def test_penalties_and_bias_move_the_top_blocks(isa_name, vocab, temperature, top_k, top_p):
    """The kernel keeps the maximum of every 128-logit block, and of its vector lanes, and
    skips blocks below its top-k threshold (at vocab 4096, with fewer blocks than top_k 50,
    the threshold comes from the lanes); penalties and bias edit copies of the blocks they
    touch. The histories hold each row's best tokens (a strong penalty lowers their
    blocks' and lanes' maxima) and a bias lifts a token out of a low block: exact tokens
    against the reference."""
    rng = np.random.default_rng(11)
    batch = 24
    logits = random_logits(rng, batch, vocab)
    rows = [np.concatenate([np.argsort(-logits[r])[:60], rng.integers(0, vocab, 40)]) for r in range(batch)]
    # The lifted token joins the survivors' top 20 without dominating them (a token that
    # took every draw would hide a wrong kept set).
    low = [int(np.argsort(logits[r])[r]) for r in range(batch)]
    lift = [float(np.sort(logits[r])[-80] - logits[r, low[r]]) + 0.01 for r in range(batch)]
    bias_rows = [[(low[r], lift[r]), (int(rng.integers(0, vocab)), -np.inf)] for r in range(batch)]
    kwargs = params(batch, seeds=rng.integers(0, 2**63, batch, dtype=np.uint64), temperature=temperature,
                    top_k=top_k, top_p=top_p, repetition_penalty=3.0, presence_penalty=0.5, frequency_penalty=0.25)
    history = np.concatenate(rows).astype(np.int64)
    offsets = np.arange(batch + 1, dtype=np.int64) * 100
    prompt_lens = np.full(batch, 30, np.int64)
    bias = (np.array([t for b in bias_rows for t, _ in b], np.int64),
            np.array([v for b in bias_rows for _, v in b], np.float32), np.arange(batch + 1, dtype=np.int64) * 2)
    checked = 0
    with isa.forced(isa_name):
        result = ops.sample(logits, **kwargs, history=history, history_offsets=offsets, prompt_lens=prompt_lens,
                            logit_bias=bias)
    for r in range(batch):
        penalised = reference.penalised_logits(logits[r], history=rows[r], prompt_len=30, repetition_penalty=3.0,
                                               presence_penalty=0.5, frequency_penalty=0.25, bias=bias_rows[r])
        token, gap = reference.sample_token(penalised, int(kwargs["seeds"][r]), 0, temperature, top_k, top_p)
        if gap > AMBIGUOUS:
            assert result.tokens[r] == token, (isa_name, r)
            checked += 1
    # Top-p over the whole of vocab 50257 (top_k off) leaves tokens of probability ~2e-5: a
    # draw lands within AMBIGUOUS of a token's edge in about a quarter of the rows.
    assert checked > 0.6 * batch


@isa.EACH
def test_tied_logits_put_the_lower_id_first(isa_name):
    """Logits on a coarse grid tie in groups, at the top-k cut and among the survivors: the
    sampling order puts the lower id first, in the kept set, the draw and the top-n."""
    rng = np.random.default_rng(13)
    batch, vocab = 300, 4096
    row = np.round(random_logits(rng, 1, vocab) * 2) / 2
    logits = np.repeat(row, batch, axis=0)
    checked = 0
    for top_k, top_p in [(50, 1.0), (50, 0.9), (7, 1.0), (100, 0.8)]:
        kwargs = params(batch, steps=np.arange(batch, dtype=np.uint64), seeds=np.full(batch, 3, np.uint64),
                        temperature=0.9, top_k=top_k, top_p=top_p)
        with isa.forced(isa_name):
            result = ops.sample(logits, **kwargs, num_logprobs=20)
        np.testing.assert_array_equal(result.top_ids[0], np.argsort(-row[0], kind="stable")[:20])
        for r in range(batch):
            token, gap = reference.sample_token(row[0], 3, r, 0.9, top_k, top_p)
            if gap > AMBIGUOUS:
                assert result.tokens[r] == token, (isa_name, top_k, top_p, r)
                checked += 1
    assert checked > 0.9 * 4 * batch


@isa.EACH
@settings(max_examples=25, deadline=None)
@given(vocab=st.sampled_from([1, 3, 50, 999]), batch=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       repetition=st.sampled_from([1.0, 1.3, 0.7]), presence=st.sampled_from([0.0, 0.5, -1.0]),
       frequency=st.sampled_from([0.0, 0.25, 2.0]), with_bias=st.booleans())
def test_greedy_is_argmax_after_bias_and_penalties(isa_name, vocab, batch, seed, repetition, presence, frequency, with_bias):
    rng = np.random.default_rng(seed)
    logits = random_logits(rng, batch, vocab)
    # Histories favour the top tokens, so the penalties change the argmax.
    lengths = rng.integers(0, 12, batch)
    rows = [np.concatenate([np.argsort(-logits[r])[:3], rng.integers(0, vocab, n)])[: n + 3] for r, n in
            enumerate(lengths)]
    history = np.concatenate(rows).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in rows])]).astype(np.int64)
    prompt_lens = np.array([rng.integers(0, len(h) + 1) for h in rows], np.int64)
    bias_rows = [[(int(rng.integers(0, vocab)), float(rng.choice([-np.inf, -2.0, 3.0, 0.5])))
                  for _ in range(rng.integers(0, 4))] if with_bias else [] for _ in range(batch)]
    if with_bias:
        ids = np.array([t for b in bias_rows for t, _ in b], np.int64)
        values = np.array([v for b in bias_rows for _, v in b], np.float32)
        bias = (ids, values, np.concatenate([[0], np.cumsum([len(b) for b in bias_rows])]).astype(np.int64))
    else:
        bias = None
    kwargs = params(batch, temperature=0.0, repetition_penalty=repetition, presence_penalty=presence,
                    frequency_penalty=frequency)
    expected_logits = [reference.penalised_logits(logits[r], history=rows[r], prompt_len=int(prompt_lens[r]),
                                                  repetition_penalty=repetition, presence_penalty=presence,
                                                  frequency_penalty=frequency, bias=bias_rows[r])
                       for r in range(batch)]
    if any(np.all(x == -np.inf) for x in expected_logits):
        with pytest.raises(ValueError, match="every token at -inf"):
            ops.sample(logits, **kwargs, history=history, history_offsets=offsets, prompt_lens=prompt_lens,
                       logit_bias=bias)
        return
    with isa.forced(isa_name):
        result = ops.sample(logits, **kwargs, history=history, history_offsets=offsets,
                            prompt_lens=prompt_lens, logit_bias=bias)
    np.testing.assert_array_equal(result.tokens, [int(np.argmax(x)) for x in expected_logits], err_msg=isa_name)
    # logprobs stay those of the raw logits.
    expected = reference.log_softmax(logits)
    chosen = np.take_along_axis(expected, result.tokens[:, None], 1)[:, 0]
    np.testing.assert_allclose(result.logprobs, chosen, rtol=0,
                               atol=logprob_tolerance(logits, expected).max(), err_msg=isa_name)


@isa.EACH
def test_penalties_change_the_sampled_distribution_as_the_reference(isa_name):
    """Penalties with temperature > 0: exact tokens against the reference on penalised logits."""
    rng = np.random.default_rng(3)
    vocab, batch = 40, 300
    row = random_logits(rng, 1, vocab)[0]
    history = np.array([int(np.argmax(row)), 5, 5, 7, 11, 5, 7], np.int64)
    expected_logits = reference.penalised_logits(row, history=history, prompt_len=2, repetition_penalty=1.2,
                                                 presence_penalty=0.4, frequency_penalty=0.3, bias=[(3, 2.0)])
    kwargs = params(batch, steps=np.arange(batch, dtype=np.uint64), seeds=np.full(batch, 7, np.uint64),
                    temperature=0.9, top_k=15, top_p=0.95, repetition_penalty=1.2, presence_penalty=0.4, frequency_penalty=0.3)
    offsets = np.arange(batch + 1, dtype=np.int64) * len(history)
    with isa.forced(isa_name):
        tokens = ops.sample(np.repeat(row[None], batch, 0), **kwargs, history=np.tile(history, batch),
                            history_offsets=offsets, prompt_lens=np.full(batch, 2, np.int64),
                            logit_bias=(np.full(batch, 3, np.int64), np.full(batch, 2.0, np.float32),
                                        np.arange(batch + 1, dtype=np.int64))).tokens
    for r in range(batch):
        token, gap = reference.sample_token(expected_logits, 7, r, 0.9, 15, 0.95)
        if gap > AMBIGUOUS:
            assert tokens[r] == token, (isa_name, r)


@isa.EACH
@pytest.mark.parametrize("top_k, top_p, min_p", [(8, 1.0, 0.0), (0, 0.9, 0.0), (0, 1.0, 0.1), (12, 0.8, 0.02)])
def test_empirical_distribution_matches_filtered_softmax(isa_name, top_k, top_p, min_p):
    rng = np.random.default_rng(4)
    vocab, draws = 30, 20000
    row = random_logits(rng, 1, vocab, 1.5)[0]
    ids, probs, _ = reference.kept_distribution(row, 0.9, top_k, top_p, min_p)
    kwargs = params(draws, steps=np.arange(draws, dtype=np.uint64), seeds=np.full(draws, 123, np.uint64),
                    temperature=0.9, top_k=top_k, top_p=top_p, min_p=min_p)
    with isa.forced(isa_name):
        tokens = ops.sample(np.repeat(row[None], draws, 0), **kwargs).tokens
    assert set(tokens.tolist()) <= set(ids.tolist()), isa_name
    observed = np.array([np.count_nonzero(tokens == t) for t in ids])
    assert stats.chisquare(observed, probs * draws).pvalue > 1e-3, isa_name


def test_a_row_does_not_depend_on_its_batch():
    rng = np.random.default_rng(5)
    vocab = 1001
    logits = random_logits(rng, 9, vocab)
    history = rng.integers(0, vocab, 9 * 6).astype(np.int64)
    kwargs = params(9, seeds=rng.integers(0, 2**63, 9, dtype=np.uint64), steps=rng.integers(0, 100, 9, dtype=np.uint64),
                    temperature=rng.uniform(0, 2, 9).astype(np.float32), top_k=rng.integers(0, 60, 9, dtype=np.int32),
                    top_p=rng.uniform(0.5, 1, 9).astype(np.float32), min_p=rng.uniform(0, 0.1, 9).astype(np.float32),
                    repetition_penalty=np.full(9, 1.2, np.float32), frequency_penalty=np.full(9, 0.1, np.float32))
    kwargs["temperature"][4] = 0.0
    full = ops.sample(logits, **kwargs, history=history, history_offsets=np.arange(10, dtype=np.int64) * 6,
                      prompt_lens=np.full(9, 2, np.int64), num_logprobs=4)
    for rows in ([4], [0, 4], [4, 8, 1], list(range(8, -1, -1))):
        sub = {k: v[rows] for k, v in kwargs.items()}
        part = ops.sample(np.ascontiguousarray(logits[rows]), **sub,
                          history=np.concatenate([history[r * 6:(r + 1) * 6] for r in rows]),
                          history_offsets=np.arange(len(rows) + 1, dtype=np.int64) * 6,
                          prompt_lens=np.full(len(rows), 2, np.int64), num_logprobs=4)
        assert full.errors == {} and part.errors == {}
        for field_full, field_part in zip(full[:4], part[:4]):
            np.testing.assert_array_equal(field_full[rows], field_part)


def test_vocab_of_one_and_neg_inf_tokens():
    r = ops.sample(np.array([[2.5]], np.float32), **params(1, temperature=0.7), num_logprobs=1)
    assert r.tokens.tolist() == [0] and r.logprobs[0] == 0.0 and r.top_ids.tolist() == [[0]]
    logits = np.full((1, 9), -np.inf, np.float32)
    logits[0, [2, 6]] = [0.0, np.log(3.0)]
    draws = 4000
    tokens = ops.sample(np.repeat(logits, draws, 0), **params(draws, steps=np.arange(draws, dtype=np.uint64)),
                        num_logprobs=3)
    assert set(tokens.tokens.tolist()) == {2, 6}
    assert stats.binomtest(int(np.count_nonzero(tokens.tokens == 6)), draws, 0.75).pvalue > 1e-3
    assert tokens.top_ids[0].tolist() == [6, 2, 0] and tokens.top_logprobs[0, 2] == -np.inf


@isa.EACH
@pytest.mark.parametrize("bad, message", [(np.nan, "row 2 has NaN"), (np.inf, r"row 2 has \+inf")])
def test_non_finite_logits_name_the_row(isa_name, bad, message):
    logits = np.zeros((4, 11), np.float32)
    logits[2, 5] = bad
    with isa.forced(isa_name), pytest.raises(ValueError, match=message):
        ops.sample(logits, **params(4))
    logits[2] = -np.inf
    with pytest.raises(ValueError, match="row 2 is all -inf"):
        ops.sample(logits, **params(4))


def test_bad_arguments_raise_clear_errors():
    logits = np.zeros((3, 10), np.float32)
    cases = [
        (dict(temperature=-0.5), "temperature: row 0 is -0.5"),
        (dict(top_p=0.0), r"top_p: row 0 is 0.0, expected in \(0, 1\]"),
        (dict(top_p=1.5), "top_p: row 0 is 1.5"),
        (dict(top_k=-1), "top_k: row 0 is -1"),
        (dict(min_p=2.0), "min_p: row 0 is 2.0"),
        (dict(repetition_penalty=0.0), "repetition_penalty: row 0 is 0.0"),
        (dict(frequency_penalty=np.inf), "frequency_penalty: row 0 is inf"),
        (dict(seeds=np.zeros(2, np.uint64)), r"seeds: expected C-contiguous uint64 \(3,\)"),
        (dict(temperature=np.ones(3, np.float64)), r"temperature: expected C-contiguous float32 \(3,\), got float64"),
    ]
    for override, message in cases:
        with pytest.raises(ValueError, match=message):
            ops.sample(logits, **params(3, **override))
    with pytest.raises(ValueError, match=r"logits: expected C-contiguous float32 \(batch, vocab\), got float64 \(3, 10\)"):
        ops.sample(logits.astype(np.float64), **params(3))
    with pytest.raises(ValueError, match="logits: expected C-contiguous float32 .* got non-contiguous"):
        ops.sample(np.zeros((3, 20), np.float32)[:, ::2], **params(3))
    history = dict(history=np.array([1, 2, 3], np.int64), history_offsets=np.array([0, 1, 2, 3], np.int64))
    with pytest.raises(ValueError, match=r"history: id 10 at index 1 is outside \[0, 10\)"):
        ops.sample(logits, **params(3), history=np.array([1, 10, 3], np.int64),
                   history_offsets=history["history_offsets"])
    with pytest.raises(ValueError, match=r"history_offsets: not monotone at row 1 \(2 then 1\)"):
        ops.sample(logits, **params(3), history=history["history"],
                   history_offsets=np.array([0, 2, 1, 3], np.int64))
    with pytest.raises(ValueError, match="history_offsets: expected to start at 0 and end at 3"):
        ops.sample(logits, **params(3), history=history["history"], history_offsets=np.array([0, 1, 2, 2], np.int64))
    with pytest.raises(ValueError, match=r"prompt_lens: row 1 is 2, expected 0 .. 1"):
        ops.sample(logits, **params(3), **history, prompt_lens=np.array([1, 2, 0], np.int64))
    with pytest.raises(ValueError, match="history and history_offsets: give both or neither"):
        ops.sample(logits, **params(3), history=history["history"])
    bias = (np.array([1], np.int64), np.array([np.inf], np.float32), np.array([0, 1, 1, 1], np.int64))
    with pytest.raises(ValueError, match="logit_bias values: index 0 is inf"):
        ops.sample(logits, **params(3), logit_bias=bias)
    with pytest.raises(ValueError, match="logit_bias ids: id -1"):
        ops.sample(logits, **params(3), logit_bias=(np.array([-1], np.int64), np.zeros(1, np.float32), bias[2]))
    with pytest.raises(ValueError, match="num_logprobs: expected 0 .. 10, got 11"):
        ops.sample(logits, **params(3), num_logprobs=11)
    with pytest.raises(ValueError, match="row 1 has every token at -inf after logit_bias"):
        ops.sample(np.zeros((2, 2), np.float32), **params(2),
                   logit_bias=(np.array([0, 1], np.int64), np.full(2, -np.inf, np.float32),
                               np.array([0, 0, 2], np.int64)))


def test_a_prepared_sampler_gives_what_sample_gives_step_after_step():
    """ops.Sampler checks and copies the per-row parameters once and counts each row's
    history (the generation loop's form), then adds each token it samples to that history and
    moves each row's step on from the first one it was given: its calls equal one-shot
    ops.sample calls given the whole history so far and the step, a later change
    to the caller's arrays does not reach it, and a logits array of another shape is
    refused by name."""
    rng = np.random.default_rng(12)
    batch, vocab = 5, 3000
    kwargs = params(batch, seeds=rng.integers(0, 2**63, batch, dtype=np.uint64), temperature=0.9, top_k=40,
                    top_p=0.9, repetition_penalty=1.3, frequency_penalty=0.2, presence_penalty=0.5)
    del kwargs["steps"]  # the sampler's own, from 3
    bias = (np.array([7, 8], np.int64), np.array([2.0, -np.inf], np.float32), np.array([0, 1, 1, 2, 2, 2], np.int64))
    prompt_lens = np.full(batch, 4, np.int64)
    histories = [list(rng.integers(0, vocab, 4)) for _ in range(batch)]
    prompt = np.concatenate(histories).astype(np.int64)
    offsets = np.arange(batch + 1, dtype=np.int64) * 4
    sampler = ops.Sampler(batch, vocab, **kwargs, steps=3, history=prompt, history_offsets=offsets,
                          prompt_lens=prompt_lens, logit_bias=bias, num_logprobs=3)
    reference_kwargs = {key: value.copy() for key, value in kwargs.items()}
    kwargs["top_k"][:] = 1  # after preparation: the sampler keeps its own copies
    prompt[:] = 0
    # Boost every row's history tokens so that the penalties decide the draws (a sampler that
    # forgot its tokens would keep drawing them).
    for step in range(6):
        logits = random_logits(rng, batch, vocab)
        for row, h in enumerate(histories):
            logits[row, h] += 8.0
        history = np.concatenate(histories).astype(np.int64)
        offsets = np.arange(batch + 1, dtype=np.int64) * len(histories[0])
        steps = np.full(batch, 3 + step, np.uint64)
        expected = ops.sample(logits, **dict(reference_kwargs, steps=steps), history=history, history_offsets=offsets,
                              prompt_lens=prompt_lens, logit_bias=bias, num_logprobs=3)
        got = sampler(logits)
        for field_expected, field_got in zip(expected, got):
            np.testing.assert_array_equal(field_got, field_expected)
        for row, h in enumerate(histories):
            h.append(int(got.tokens[row]))
    with pytest.raises(ValueError, match=r"logits: expected \(5, 3000\), the \(batch, vocab\) the sampler was "
                                         r"prepared for, got float32 \(4, 3000\)"):
        sampler(random_logits(rng, 4, vocab))
    with pytest.raises(ValueError, match="prompt_lens: given without history"):
        ops.Sampler(batch, vocab, **kwargs, prompt_lens=prompt_lens)


def test_a_sampler_given_scratch_logits_edits_them_in_place_to_the_same_tokens():
    """overwrite_logits=True (the generation loop's logits are scratch once sampled): bias
    and penalties edit the array itself, and the tokens are those of the copying path, greedy
    rows included; asked for log-probabilities it leaves the array alone. A read-only array
    is refused, and a NaN still fails its row by name."""
    rng = np.random.default_rng(14)
    batch, vocab = 8, 4096
    kwargs = params(batch, temperature=np.array([0.8] * 6 + [0.0] * 2, np.float32), top_k=50, top_p=0.9,
                    repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.3,
                    steps=np.arange(batch, dtype=np.uint64))
    rows = [rng.integers(0, vocab, 40) for _ in range(batch)]
    history = dict(history=np.concatenate(rows).astype(np.int64),
                   history_offsets=np.arange(batch + 1, dtype=np.int64) * 40, prompt_lens=np.full(batch, 10, np.int64))
    bias = (np.array([3, 4000], np.int64), np.array([6.0, -np.inf], np.float32),
            np.array([0, 2, 2, 2, 2, 2, 2, 2, 2], np.int64))
    logits = random_logits(rng, batch, vocab)
    for row, h in enumerate(rows):
        logits[row, h] += 6.0  # the penalties decide the draws
    expected = ops.sample(logits, **kwargs, **history, logit_bias=bias).tokens
    scratch = logits.copy()
    got = ops.Sampler(batch, vocab, **kwargs, **history, logit_bias=bias, logprobs=False,
                      overwrite_logits=True)(scratch)
    np.testing.assert_array_equal(got.tokens, expected)
    edited = scratch != logits
    assert edited[0, 3] and not edited[:, np.setdiff1d(np.arange(vocab), np.concatenate(rows + [[3, 4000]]))].any()
    kept = logits.copy()
    with_logprobs = ops.Sampler(batch, vocab, **kwargs, **history, logit_bias=bias, overwrite_logits=True)(kept)
    np.testing.assert_array_equal(with_logprobs.tokens, expected)
    np.testing.assert_array_equal(kept, logits)
    sampler = ops.Sampler(batch, vocab, **kwargs, **history, logprobs=False, overwrite_logits=True)
    logits.flags.writeable = False
    with pytest.raises(ValueError, match="logits: array is read-only"):
        sampler(logits)
    broken = random_logits(rng, batch, vocab)
    broken[5, rows[5][0]] = np.nan
    assert sampler(broken).errors == {5: "logits: row 5 has NaN"}


def test_a_sampler_without_logprobs_draws_the_same_tokens():
    """logprobs=False skips the raw log-sum-exp: the same tokens (and top-n when asked),
    NaN log-probabilities."""
    rng = np.random.default_rng(13)
    batch, vocab = 6, 5000
    kwargs = params(batch, steps=np.arange(batch, dtype=np.uint64), temperature=0.8, top_k=50, top_p=0.9)
    logits = random_logits(rng, batch, vocab)
    full = ops.Sampler(batch, vocab, **kwargs)(logits)
    lean = ops.Sampler(batch, vocab, **kwargs, logprobs=False)(logits)
    np.testing.assert_array_equal(lean.tokens, full.tokens)
    assert np.isnan(lean.logprobs).all() and np.isfinite(full.logprobs).all()
    with_top = ops.Sampler(batch, vocab, **kwargs, num_logprobs=2, logprobs=False)(logits)
    np.testing.assert_array_equal(with_top.tokens, full.tokens)
    np.testing.assert_array_equal(with_top.top_logprobs, ops.sample(logits, **kwargs, num_logprobs=2).top_logprobs)
    with pytest.raises(AigcError, match="logprobs: expected True or False, got 1"):
        ops.Sampler(batch, vocab, **kwargs, logprobs=1)


def batch_of(rows):
    """ops.Sampler keyword arguments for a batch of per-row specs: dicts of scalar parameters
    (params()' keys; seeds default 0, so a row alone draws as in the batch), a "history"
    list and a "bias" list of (id, value)."""
    kwargs = params(len(rows), seeds=0)
    for key in kwargs:
        for r, row in enumerate(rows):
            if key in row:
                kwargs[key][r] = row[key]
    histories = [row.get("history", []) for row in rows]
    biases = [row.get("bias", []) for row in rows]
    kwargs["history"] = np.array([t for h in histories for t in h], np.int64)
    kwargs["history_offsets"] = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
    kwargs["logit_bias"] = (np.array([t for b in biases for t, _ in b], np.int64),
                            np.array([v for b in biases for _, v in b], np.float32),
                            np.concatenate([[0], np.cumsum([len(b) for b in biases])]).astype(np.int64))
    return kwargs


@isa.EACH
@pytest.mark.parametrize("in_place", [False, True])
def test_a_row_that_fails_fails_alone(isa_name, in_place):
    """NaN, +inf, a +inf a penalty makes (repetition_penalty 1e-39 divides a positive logit)
    and a row whose every token a bias bans: each of those rows is in errors with its
    message and token -1, and every other row gets the token it gets sampled alone (in
    place: the edits happen before the scan, which then finds the +inf itself)."""
    rng = np.random.default_rng(21)
    vocab = 700
    logits = random_logits(rng, 8, vocab)
    logits[1, 17] = np.nan
    logits[3, 600] = np.inf
    logits[5, 42] = 2.0
    rows = [dict(temperature=0.8, top_k=40, seeds=11, steps=3, history=[1, 2, 3], repetition_penalty=1.3),
            dict(temperature=0.0),
            dict(temperature=1.1, top_p=0.9, bias=[(5, 4.0)]),
            dict(temperature=0.7),
            dict(temperature=0.0, bias=[(9, -np.inf)], history=[9, 9, 4], frequency_penalty=0.5),
            dict(temperature=0.9, history=[42, 43], repetition_penalty=1e-39),
            dict(temperature=0.9, bias=[(t, -np.inf) for t in range(vocab)]),
            dict(temperature=1.5, min_p=0.05, steps=9, history=[0, 0, 1], presence_penalty=0.7)]
    edit = r"has \+inf" if in_place else r"has \+inf at token 42 after logit_bias and penalties"
    expected_errors = {1: "logits: row 1 has NaN", 3: r"logits: row 3 has \+inf", 5: "logits: row 5 " + edit,
                       6: "logits: row 6 has every token at -inf after logit_bias"}
    options = dict(logprobs=False, overwrite_logits=True) if in_place else dict(num_logprobs=2)
    with isa.forced(isa_name):
        result = ops.Sampler(8, vocab, **batch_of(rows), **options)(logits.copy())
        assert sorted(result.errors) == sorted(expected_errors), isa_name
        for r, message in expected_errors.items():
            assert re.fullmatch(message, result.errors[r]), (isa_name, result.errors[r])
            assert result.tokens[r] == -1 and np.isnan(result.logprobs[r])
            if not in_place:
                assert (result.top_ids[r] == -1).all() and np.isnan(result.top_logprobs[r]).all()
        for r in set(range(8)) - set(expected_errors):
            alone = ops.Sampler(1, vocab, **batch_of([rows[r]]), **options)(logits[r:r + 1].copy())
            assert alone.errors == {}
            assert result.tokens[r] == alone.tokens[0], (isa_name, r)
            if not in_place:
                np.testing.assert_array_equal(result.top_ids[r], alone.top_ids[0])
    # The one-shot form still raises, naming the first row that failed.
    with pytest.raises(ValueError, match="logits: row 1 has NaN"):
        ops.sample(logits, **batch_of(rows))


def test_a_failed_row_keeps_its_history_and_step():
    """A prepared sampler's failed row neither counts a token nor moves its step: its next
    call draws what a fresh sampler at that step and history draws, while the other rows
    move on."""
    rng = np.random.default_rng(22)
    vocab = 300
    rows = [dict(temperature=0.9, seeds=s, steps=4, history=[7, 8], repetition_penalty=1.5, frequency_penalty=0.3)
            for s in (1, 2, 3)]
    sampler = ops.Sampler(3, vocab, **batch_of(rows))
    first = random_logits(rng, 3, vocab)
    first[1, 0] = np.nan
    got = sampler(first)
    assert got.errors == {1: "logits: row 1 has NaN"} and got.tokens[1] == -1
    tokens = got.tokens.copy()
    second = random_logits(rng, 3, vocab)
    got = sampler(second)
    assert got.errors == {}
    for r in range(3):
        moved = r != 1
        row = dict(rows[r], steps=4 + moved, history=rows[r]["history"] + ([int(tokens[r])] if moved else []))
        fresh = ops.Sampler(1, vocab, **batch_of([row]))(second[r:r + 1])
        assert got.tokens[r] == fresh.tokens[0], r
    assert sampler(second).errors is sampler(second).errors  # no dict per call when every row samples
