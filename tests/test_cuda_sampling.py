"""The CUDA sampler against the CPU sampler: the same tokens, errors and top ids for every
row, log-probabilities within the CPU's own error (skipped where no GPU is visible); the
CUDA build reproduces the float arithmetic of the CPU build in use, so each case runs under
every ISA this CPU has. Without a GPU, device="cuda" fails at once saying why.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isa
from aigc_engine import _C, ops

needs_gpu = pytest.mark.skipif(not ops.cuda_available(), reason="no CUDA device (or a CPU-only build)")
F32 = np.finfo(np.float32).eps
VOCABS = [1, 2, 7, 64, 65, 127, 128, 129, 1000, 4097, 32000, 50257, 60000]


def logprob_tolerance(logits, values):
    # The CPU's error (tests/test_sampling.py: float32 lane sums of at most 64 terms, exp2
    # of an argument carrying |x| eps, one rounding of the result); the GPU's log-sum-exp is
    # in double.
    finite = np.where(np.isfinite(logits), np.abs(logits), 0).max(axis=-1, keepdims=True)
    return 70 * F32 + 4 * F32 * (np.abs(values) + finite)


def row_params(rng, batch, vocab):
    """Every knob drawn per row, "off" often enough that each filter also runs alone."""
    pick = lambda options, dtype: np.array([options[i] for i in rng.integers(0, len(options), batch)], dtype)
    return dict(
        seeds=rng.integers(0, 2**64 - 1, batch, dtype=np.uint64),
        steps=rng.integers(0, 2**63, batch, dtype=np.uint64),
        temperature=pick([0.0, 0.3, 0.8, 1.0, 1.0, 2.5], np.float32),
        top_k=pick([0, 0, 1, 3, 40, 64, 65, 300, 2000, vocab + 1], np.int32),
        top_p=pick([1.0, 1.0, 0.95, 0.7, 0.3], np.float32),
        min_p=pick([0.0, 0.0, 0.02, 0.3], np.float32),
        repetition_penalty=pick([1.0, 1.0, 1.3, 0.7], np.float32),
        presence_penalty=pick([0.0, 0.0, 0.5, -1.0], np.float32),
        frequency_penalty=pick([0.0, 0.0, 0.25], np.float32))


def histories_and_bias(rng, logits):
    """Histories that hold each row's best tokens and random ones; a bias that lifts one
    token, bans a few and, in some rows, every token."""
    batch, vocab = logits.shape
    rows = [np.concatenate([np.argsort(-logits[r])[: rng.integers(0, 20)], rng.integers(0, vocab, rng.integers(0, 30))])
            for r in range(batch)]
    history = np.concatenate(rows + [np.zeros(0)]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in rows])]).astype(np.int64)
    prompt_lens = np.array([rng.integers(0, len(h) + 1) for h in rows], np.int64)
    ids, values = [], []
    for r in range(batch):
        kind = rng.integers(0, 5)
        if kind == 0:
            row = []
        elif kind == 4:  # every token banned
            row = [(t, -np.inf) for t in range(vocab)]
        else:
            row = [(int(rng.integers(0, vocab)), float(rng.normal(0, 4))) for _ in range(3)]
            row += [(int(rng.integers(0, vocab)), -np.inf) for _ in range(kind)]
        ids.append([t for t, _ in row])
        values.append([v for _, v in row])
    bias = (np.array([t for row in ids for t in row], np.int64),
            np.array([v for row in values for v in row], np.float32),
            np.concatenate([[0], np.cumsum([len(row) for row in ids])]).astype(np.int64))
    return dict(history=history, history_offsets=offsets, prompt_lens=prompt_lens, logit_bias=bias)


def spoil_rows(rng, logits):
    """NaN, +inf and all -inf rows mixed with good ones, and -inf tokens in good rows."""
    for r in range(logits.shape[0]):
        kind = rng.integers(0, 8)
        if kind == 0:
            logits[r, rng.integers(0, logits.shape[1])] = np.nan
        elif kind == 1:
            logits[r, rng.integers(0, logits.shape[1])] = np.inf
        elif kind == 2:
            logits[r] = -np.inf
        elif kind == 3:
            logits[r, rng.integers(0, logits.shape[1], 1 + logits.shape[1] // 3)] = -np.inf


def assert_same(cpu, cuda, logits, where):
    np.testing.assert_array_equal(cuda.tokens, cpu.tokens, err_msg=where)
    assert cuda.errors == cpu.errors, where
    np.testing.assert_array_equal(cuda.top_ids, cpu.top_ids, err_msg=where)
    ok = cpu.tokens >= 0
    if ok.any():
        expected = cpu.logprobs[ok][:, None]
        np.testing.assert_allclose(cuda.logprobs[ok][:, None], expected, rtol=0,
                                   atol=logprob_tolerance(logits[ok], expected).max(), err_msg=where)
        top = cpu.top_logprobs[ok]
        if top.size:
                np.testing.assert_allclose(cuda.top_logprobs[ok], top, rtol=0,
                                       atol=logprob_tolerance(logits[ok], np.where(np.isfinite(top), top, 0)).max(),
                                       err_msg=where)
    assert np.isnan(cuda.logprobs[~ok]).all() and (cuda.top_ids[~ok] == -1).all(), where


def run_steps(logits_steps, kwargs, isa_name, **options):
    """The same Sampler on both devices over several steps (histories grow, steps move on)."""
    batch, vocab = logits_steps[0].shape
    with isa.forced(isa_name):
        cpu = ops.Sampler(batch, vocab, **kwargs, **options)
        cuda = ops.Sampler(batch, vocab, **kwargs, **options, device="cuda")
        for step, logits in enumerate(logits_steps):
            a = cpu(logits.copy())
            a = a._replace(**{k: getattr(a, k).copy() for k in ("tokens", "logprobs", "top_ids", "top_logprobs")},
                           errors=dict(a.errors))
            assert_same(a, cuda(logits.copy()), logits, f"{isa_name} step {step}")


@needs_gpu
@isa.EACH
@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 70), vocab=st.one_of(st.sampled_from(VOCABS), st.integers(1, 60000)),
       seed=st.integers(0, 2**32 - 1), num_logprobs=st.sampled_from([0, 1, 5, 20]),
       scale=st.sampled_from([0.1, 3.0, 30.0]), edits=st.booleans())
def test_cuda_draws_the_cpu_tokens(isa_name, batch, vocab, seed, num_logprobs, scale, edits):
    rng = np.random.default_rng(seed)
    steps = [(rng.standard_normal((batch, vocab)) * scale).astype(np.float32) for _ in range(3)]
    for logits in steps:
        spoil_rows(rng, logits)
    kwargs = row_params(rng, batch, vocab)
    if edits:
        kwargs.update(histories_and_bias(rng, steps[0]))
    run_steps(steps, kwargs, isa_name, num_logprobs=min(num_logprobs, vocab))


@needs_gpu
@isa.EACH
@pytest.mark.parametrize("vocab", [129, 50257])
def test_cuda_matches_over_many_seeds_and_ties(isa_name, vocab):
    """Hundreds of draws per configuration on one row: a kept set one token off, or a sum in
    another order, shows up as a different token for some seed. Logits on a coarse grid tie
    in groups (the lower id goes first), and a flat row puts every token in one bucket."""
    rng = np.random.default_rng(vocab)
    batch = 256
    grid = np.round(rng.standard_normal(vocab) * 4) / 2
    for row in [rng.standard_normal(vocab) * 2, grid, np.zeros(vocab)]:
        logits = np.repeat(row[None].astype(np.float32), batch, axis=0)
        for temperature, top_k, top_p, min_p in [(0.8, 50, 0.9, 0.0), (1.0, 0, 0.9, 0.0), (1.3, 0, 1.0, 0.02),
                                                 (0.7, 20, 1.0, 0.1), (1.0, 0, 1.0, 0.0), (2.0, 100, 0.5, 0.01),
                                                 (1.0, 1000, 0.95, 0.0), (0.0, 0, 1.0, 0.0)]:
            kwargs = dict(seeds=np.full(batch, 7, np.uint64), steps=np.arange(batch, dtype=np.uint64),
                          temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=1.0,
                          presence_penalty=0.0, frequency_penalty=0.0)
            run_steps([logits], kwargs, isa_name, num_logprobs=3)


@needs_gpu
def test_cuda_in_place_edits_report_as_the_cpu():
    """overwrite_logits without log-probabilities: the CPU edits first and checks after, so a
    NaN the penalties make is reported as NaN and a row banned whole as all banned."""
    rng = np.random.default_rng(5)
    batch, vocab = 6, 300
    logits = (rng.standard_normal((batch, vocab)) * 3).astype(np.float32)
    logits[1, 7] = 3e38
    kwargs = dict(seeds=np.arange(batch, dtype=np.uint64), steps=0, temperature=np.float32(0.9), top_k=0, top_p=0.9,
                  min_p=0.0, repetition_penalty=np.float32(1e-39), presence_penalty=0.0, frequency_penalty=0.0,
                  history=np.array([7] * batch, np.int64), history_offsets=np.arange(batch + 1, dtype=np.int64),
                  logit_bias=(np.arange(vocab, dtype=np.int64), np.full(vocab, -np.inf, np.float32),
                              np.array([0, 0, 0, vocab, vocab, vocab, vocab], np.int64)))
    for options in [dict(overwrite_logits=True, logprobs=False), dict(overwrite_logits=False, logprobs=True)]:
        run_steps([logits], kwargs, _C.active_isa(), **options)


@pytest.mark.skipif(ops.cuda_available(), reason="a CUDA device is visible")
@pytest.mark.parametrize("call", [
    lambda: ops.sample(np.zeros((2, 5), np.float32), seeds=0, steps=0, temperature=1.0, top_k=0, top_p=1.0,
                       min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                       device="cuda"),
    lambda: ops.Sampler(2, 5, seeds=0, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                        presence_penalty=0.0, frequency_penalty=0.0, device="cuda"),
], ids=["sample", "Sampler"])
def test_cuda_sampling_without_a_gpu_says_why(call):
    why = "no CUDA device is visible" if _C.cuda_compiled else "this build of aigc_engine has no CUDA support"
    with pytest.raises(ValueError, match=f"^device='cuda': {why}$"):
        call()


def test_an_unknown_sampling_device_is_refused_by_name():
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda', got 'tpu'"):
        ops.sample(np.zeros((2, 5), np.float32), seeds=0, steps=0, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                   repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, device="tpu")
