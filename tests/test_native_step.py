"""The native step (_C.Generation: batching, forward, sampling and token-level stops in one
call) gives what the previous path gave: the Python scheduler driving _C.GptModel.forward
and ops.Sampler step by step — kept below as a small reference loop — token for token and
log-probability for log-probability, for the same seeds, batches and params; through
preemption with a tiny cache, cancellation, a rewind, and whatever else is in the batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aigc_engine import SamplingParams, TextGenerator, _C, ops  # noqa: E402
from aigc_engine.artifacts.artifact import TEXT_FAMILIES, read_artifact  # noqa: E402
from aigc_engine.text.native import NativeGpt  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402

RUNNING, STOPPED_EOS, STOPPED_LENGTH, ERROR = range(4)
BLOCK = 16
DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "bias": {}, "eos": -1, "max_new": 12, "logprobs": -1}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny-step"), "gpt")[1]


@pytest.fixture(scope="module")
def gpt(tiny_path):
    return NativeGpt(read_artifact(tiny_path, TEXT_FAMILIES))


def fresh_cache(gpt: NativeGpt, num_blocks: int):
    c = gpt.config
    return _C.KvCache(c["n_layer"], c["n_head"], c["n_embd"] // c["n_head"], BLOCK, num_blocks)


def request(seed: int, prompt_len: int, **params) -> dict:
    rng = np.random.default_rng(seed)
    return dict(DEFAULTS, seed=seed, prompt=rng.integers(0, 300, prompt_len).tolist(), **params)


class Ref:
    """One request in the reference loop (what text/request.py and scheduler.py kept)."""

    def __init__(self, r: dict):
        self.r, self.generated, self.logprobs, self.state = r, [], [], RUNNING
        self.blocks, self.cached = [], 0

    def known(self) -> int:
        return len(self.r["prompt"]) + len(self.generated)

    def token(self, position: int) -> int:
        prompt = self.r["prompt"]
        return prompt[position] if position < len(prompt) else self.generated[position - len(prompt)]


def reference(gpt: NativeGpt, cache, requests: list[dict], max_batch: int = 32, max_step_tokens: int = 4096):
    """The previous scheduler's loop: make room (preempting the latest arrival), admit,
    one forward, then ops.Sampler over the due rows (prepared from each row's history and
    step, as BatchSampler did)."""
    waiting, running, vocab = [Ref(r) for r in requests], [], gpt.vocab_size
    everyone = list(waiting)
    blocks_for = lambda n: -(-n // BLOCK)  # noqa: E731

    def preempt(seq):
        running.remove(seq)
        cache.release(seq.blocks)
        seq.blocks, seq.cached = [], 0
        waiting.insert(0, seq)

    while waiting or running:
        for seq in list(running):  # preempt() changes running
            if seq not in running:
                continue
            while blocks_for(seq.cached + 1) > len(seq.blocks):
                if cache.free_blocks == 0:
                    victim = running[-1]
                    preempt(victim)
                    if victim is seq:
                        break
                    continue
                seq.blocks += cache.allocate(1)
        prompts, budget = [], max_step_tokens - len(running)
        while waiting and len(running) < max_batch:
            seq, n = waiting[0], len(waiting[0].r["prompt"])
            if blocks_for(n + 1) > cache.free_blocks or (n > budget and prompts):
                break
            waiting.pop(0)
            seq.blocks = cache.allocate(blocks_for(n + 1))
            running.append(seq)
            prompts.append(seq)
            budget -= n
        decoding = [s for s in running if s not in prompts]
        batch = decoding + prompts
        due = [s for s in decoding if s.cached + 1 == s.known()] + [s for s in prompts if not s.generated]
        tokens, positions, lengths, contexts = [], [], [], []
        for s in decoding:
            tokens.append(s.token(s.cached))
            positions.append(s.cached)
            lengths.append(1)
            contexts.append(s.cached + 1)
        for s in prompts:
            n = len(s.r["prompt"])
            tokens += s.r["prompt"]
            positions += range(n)
            lengths.append(n), contexts.append(n)
        table = np.zeros((len(batch), max(len(s.blocks) for s in batch)), np.int32)
        for row, s in enumerate(batch):
            table[row, :len(s.blocks)] = s.blocks
        logits = np.empty((len(batch), vocab), np.float32)
        gpt.model.forward(np.array(tokens, np.int64), np.array(positions, np.int64),
                          np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32), np.array(contexts, np.int32),
                          np.array([0] * len(decoding) + [1] * len(prompts), np.uint8), table, cache, logits)
        for s, n in zip(batch, lengths):
            s.cached += n
        if not due:
            continue
        logits = np.ascontiguousarray(logits[[batch.index(s) for s in due]])
        rs = [s.r for s in due]
        bias = None
        if any(r["bias"] for r in rs):
            bias = (np.array([i for r in rs for i in r["bias"]], np.int64),
                    np.array([v for r in rs for v in r["bias"].values()], np.float32),
                    np.concatenate([[0], np.cumsum([len(r["bias"]) for r in rs])]).astype(np.int64))
        history = {}
        if any(r["repetition_penalty"] != 1 or r["presence_penalty"] or r["frequency_penalty"] for r in rs):
            histories = [s.r["prompt"] + s.generated for s in due]
            offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
            history = {"history": np.array([t for h in histories for t in h], np.int64), "history_offsets": offsets,
                       "prompt_lens": np.array([len(r["prompt"]) for r in rs], np.int64)}

        def column(key, dtype, rs=rs):
            return np.array([r[key] for r in rs], dtype)
        result = ops.Sampler(
            len(due), vocab, seeds=column("seed", np.uint64),
            steps=np.array([len(s.generated) for s in due], np.uint64),
            temperature=column("temperature", np.float32), top_k=column("top_k", np.int32),
            top_p=column("top_p", np.float32), min_p=column("min_p", np.float32),
            repetition_penalty=column("repetition_penalty", np.float32),
            presence_penalty=column("presence_penalty", np.float32),
            frequency_penalty=column("frequency_penalty", np.float32), **history, logit_bias=bias,
            num_logprobs=max(max(r["logprobs"] for r in rs), 0), logprobs=any(r["logprobs"] >= 0 for r in rs),
            overwrite_logits=True)(logits)
        for row, s in enumerate(due):
            if result.errors and row in result.errors:
                s.state = ERROR
            else:
                token = int(result.tokens[row])
                s.generated.append(token)
                n = s.r["logprobs"]
                if n >= 0:
                    s.logprobs.append((float(result.logprobs[row]), result.top_ids[row, :n].tolist(),
                                       result.top_logprobs[row, :n].tolist()))
                if token == s.r["eos"]:
                    s.state = STOPPED_EOS
                elif len(s.generated) >= s.r["max_new"]:
                    s.state = STOPPED_LENGTH
            if s.state != RUNNING:
                running.remove(s)
                cache.release(s.blocks)
                s.blocks = []
    return [(s.generated, s.state, s.logprobs) for s in everyone]


def add(gen, id_: int, r: dict) -> None:
    gen.add(id_, r["prompt"], r["seed"], r["temperature"], r["top_k"], r["top_p"], r["min_p"], r["repetition_penalty"],
            r["presence_penalty"], r["frequency_penalty"], list(r["bias"]), list(r["bias"].values()), r["eos"],
            r["max_new"], r["logprobs"])


def native(gpt: NativeGpt, cache, requests: list[dict], max_batch: int = 32, max_step_tokens: int = 4096,
           between=None):
    """The same requests through _C.Generation; between(gen, step) may act between steps."""
    gen = _C.Generation(gpt.model, cache, max_batch, max_step_tokens)
    for i, r in enumerate(requests):
        add(gen, i, r)
    out = {i: ([], RUNNING, []) for i in range(len(requests))}
    step = 0
    while gen.num_waiting or gen.num_running:
        ids, tokens, states, logprobs, errors = gen.step()
        for i, token, state in zip(ids, tokens, states):
            generated, _, lps = out[i]
            if state != ERROR:
                generated.append(token)
                if logprobs is not None and i in logprobs:
                    lps.append(logprobs[i])
            else:
                assert "logits: row" in errors[i]
            out[i] = (generated, state, lps)
        step += 1
        if between is not None:
            between(gen, step)
    assert cache.free_blocks == cache.num_blocks
    return [out[i] for i in range(len(requests))], gen


MIXED = [
    request(1, 5, temperature=0.0),
    request(2, 9, temperature=0.9, top_k=40),
    request(3, 3, temperature=1.1, top_p=0.8, min_p=0.05, logprobs=3),
    request(4, 17, temperature=0.8, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.7),
    request(5, 7, temperature=0.7, bias={5: 4.0, 17: -math.inf, 42: 2.5}, logprobs=0),
    request(6, 1, temperature=0.0, repetition_penalty=0.7, bias={3: 1.0}, max_new=20),
    request(7, 30, temperature=1.0, top_k=5, logprobs=20, max_new=5),
    request(8, 12, temperature=0.6, frequency_penalty=-1.0, max_new=1),
]


def test_the_native_step_gives_the_previous_paths_tokens_and_logprobs(gpt):
    expected = reference(gpt, fresh_cache(gpt, 64), MIXED)
    got, _ = native(gpt, fresh_cache(gpt, 64), MIXED)
    assert got == expected
    assert {state for _, state, _ in got} == {STOPPED_LENGTH}


def test_eos_ends_a_request_and_ignore_eos_does_not(gpt):
    (free, _, _), = reference(gpt, fresh_cache(gpt, 8), [request(9, 4, temperature=0.0)])
    eos = free[3]
    stopped = [request(9, 4, temperature=0.0, eos=eos), request(10, 6, temperature=0.9, eos=eos, max_new=30)]
    expected = reference(gpt, fresh_cache(gpt, 16), stopped)
    got, _ = native(gpt, fresh_cache(gpt, 16), stopped)
    assert got == expected
    assert got[0][1] == STOPPED_EOS and got[0][0] == free[:free.index(eos) + 1]


def test_preemption_with_a_tiny_cache_recomputes_exactly(gpt):
    requests = [request(20 + i, 10 + 3 * i, temperature=0.9, top_k=50, repetition_penalty=1.2, max_new=30)
                for i in range(5)]
    expected = reference(gpt, fresh_cache(gpt, 7), requests)
    got, gen = native(gpt, fresh_cache(gpt, 7), requests)
    assert gen.preemptions > 0
    assert got == expected
    roomy, _ = native(gpt, fresh_cache(gpt, 64), requests)  # and what they get with room to spare
    assert roomy == got


def test_a_small_step_budget_and_batch_change_nothing(gpt):
    expected, _ = native(gpt, fresh_cache(gpt, 64), MIXED)
    assert reference(gpt, fresh_cache(gpt, 64), MIXED, max_batch=3, max_step_tokens=20) == expected
    assert native(gpt, fresh_cache(gpt, 64), MIXED, max_batch=3, max_step_tokens=20)[0] == expected


def test_each_request_gets_alone_what_it_gets_in_the_batch(gpt):
    together, _ = native(gpt, fresh_cache(gpt, 64), MIXED)
    for r, got in zip(MIXED, together):
        assert native(gpt, fresh_cache(gpt, 64), [r])[0] == [got]


def test_cancelling_between_steps_frees_the_blocks_and_leaves_the_others_alone(gpt):
    expected, _ = native(gpt, fresh_cache(gpt, 64), MIXED)

    def cancel(gen, step):
        if step == 3:
            assert gen.remove(1) and not gen.remove(1)
            assert 1 not in gen.running_ids()
    got, _ = native(gpt, fresh_cache(gpt, 64), MIXED, between=cancel)
    assert [g for i, g in enumerate(got) if i != 1] == [e for i, e in enumerate(expected) if i != 1]
    assert got[1][1] == RUNNING and len(got[1][0]) == 3  # left after its third token


def test_a_rewound_sequence_is_recomputed_to_the_same_tokens(gpt):
    expected, _ = native(gpt, fresh_cache(gpt, 64), MIXED)
    cut = {}

    def rewind(gen, step):  # as after a step whose tokens the caller never took
        for i in {1: (7,), 4: (0, 3)}.get(step, ()):  # finished in this step (max_new 1), running
            cut[i] = True
            gen.rewind(i, 2 if i != 7 else 0)
    got, gen = native(gpt, fresh_cache(gpt, 64), MIXED, between=rewind)
    assert gen.preemptions == 3
    for i, (tokens, state, _) in enumerate(got):
        if i in cut:  # the tokens after the cut came twice: the second time the same
            n = 2 if i != 7 else 0
            assert tokens[:n] + tokens[len(tokens) - (len(expected[i][0]) - n):] == expected[i][0]
        else:
            assert (tokens, state) == expected[i][:2]


def test_a_row_that_cannot_be_sampled_fails_alone(gpt):
    hostile = request(30, 6, repetition_penalty=1e-39)
    got, _ = native(gpt, fresh_cache(gpt, 64), MIXED[:3] + [hostile])
    assert got[3][1] == ERROR
    assert got[:3] == native(gpt, fresh_cache(gpt, 64), MIXED[:3])[0]


def test_requests_that_can_never_run_are_refused_at_add(gpt):
    gen = _C.Generation(gpt.model, fresh_cache(gpt, 2), 4, 100)
    with pytest.raises(ValueError, match="need 3 KV-cache blocks, the cache holds 2"):
        add(gen, 0, request(1, 20, max_new=20))
    with pytest.raises(ValueError, match="exceed the model's context of 64"):
        add(gen, 0, request(1, 60, max_new=10))
    with pytest.raises(ValueError, match="max_new_tokens 9223372036854775807 exceed the model's context of 64"):
        add(gen, 0, request(1, 3, max_new=2**63 - 1))  # prompt + max_new would overflow int64
    add(gen, 0, request(1, 5))
    with pytest.raises(ValueError, match="id: 0 is already queued"):
        add(gen, 0, request(1, 5))
    assert gen.num_waiting == 1 and gen.waiting_ids() == [0]


def test_a_stop_string_found_in_python_takes_the_request_out_of_the_native_batch(tiny_path):
    generator = TextGenerator.load(str(tiny_path))
    params = SamplingParams(max_new_tokens=30, temperature=0.0, ignore_eos=True)
    free = generator.generate("def", params)[0]
    stop = free.text[len(free.text) // 2:len(free.text) // 2 + 2]
    other = SamplingParams(max_new_tokens=30, temperature=0.8, seed=3, ignore_eos=True)
    alone = generator.generate("class", other)[0].token_ids
    scheduler = generator.scheduler
    requests = generator._requests(["def", "class"], [SamplingParams(**{**params.__dict__, "stop": (stop,)}), other])
    for request in requests:
        scheduler.add(request)
    assert [seq.request for seq in scheduler.waiting] == requests and len(scheduler.running) == 0
    while not requests[0].finished:
        scheduler.step()
    assert requests[0].completion.finish_reason == "stop"
    assert requests[0].completion.text == free.text[:free.text.find(stop)]
    assert [seq.request for seq in scheduler.running] == [requests[1]]
    while scheduler.busy:
        scheduler.step()
    assert requests[1].completion.token_ids == alone
    cache = scheduler.backend.cache
    assert scheduler.stats()["free_blocks"] == cache.free_blocks == cache.num_blocks


class InterruptedOnce:
    """The native batch, but its n-th step raises KeyboardInterrupt once it has run (as a
    signal arriving when the call returns would): the step's results never reach Python."""

    def __init__(self, native, n: int):
        self._native, self._left = native, n

    def __getattr__(self, name):
        return getattr(self._native, name)

    def step(self):
        result = self._native.step()
        self._left -= 1
        if self._left == 0:
            raise KeyboardInterrupt
        return result


def test_an_interrupt_as_the_native_step_returns_loses_no_token(tiny_path):
    generator = TextGenerator.load(str(tiny_path))
    params = [SamplingParams(max_new_tokens=n, temperature=0.9, seed=i, ignore_eos=True)
              for i, n in enumerate((1, 2, 3, 8, 12))]
    prompts = ["def", "class", "x", "import os", "# a"]
    alone = [generator.generate(p, q)[0].token_ids for p, q in zip(prompts, params)]
    scheduler = generator.scheduler
    requests = generator._requests(prompts, params)
    for request in requests:
        scheduler.add(request)
    scheduler._native = InterruptedOnce(scheduler._native, n=2)  # step 2 ends requests 1 (length) and 2 more
    with pytest.raises(KeyboardInterrupt):
        while scheduler.busy:
            scheduler.step()
    while scheduler.busy:
        scheduler.step()
    assert [r.completion.token_ids for r in requests] == alone
    assert scheduler.preemptions > 0
