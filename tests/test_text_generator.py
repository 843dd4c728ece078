"""TextGenerator end to end on both backends (native decoder, onnxruntime): greedy tokens
equal a plain torch loop, seeded sampling does not depend on the batch, streaming is the
same text in UTF-8-safe pieces, logprobs are the model's, and bad prompts fail alone."""

import gc

import pytest

torch = pytest.importorskip("torch")

from aigc_engine import AigcError, ModelFileError, SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.text.request import Request  # noqa: E402
from text_fixtures import export_tiny, torch_greedy, torch_logits  # noqa: E402

torch.set_num_threads(1)
PROMPTS = ["def add(a, b):", "class", "héllo wörld 😀", "x"]
CASES = [("gpt", "native"), ("gpt", "onnxruntime"), ("lstm", "native"), ("lstm", "onnxruntime")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-text")
    return {family: export_tiny(folder, family) for family in ("gpt", "lstm")}


def load(tiny, family, backend, **options):
    return TextGenerator.load(str(tiny[family][1]), backend=backend, **options)


@pytest.mark.parametrize("family, backend", CASES)
def test_greedy_equals_a_plain_torch_loop(tiny, family, backend):
    generator = load(tiny, family, backend)
    params = SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True)
    for completion in generator.generate(PROMPTS, params):
        prompt_ids = generator.tokenizer.encode(completion.prompt)
        assert completion.token_ids == torch_greedy(tiny[family][0], prompt_ids, 24), completion.prompt
        assert completion.finish_reason == "length" and completion.prompt_tokens == len(prompt_ids)


@pytest.mark.parametrize("family, backend", CASES)
def test_seeded_sampling_does_not_depend_on_the_batch(tiny, family, backend):
    generator = load(tiny, family, backend)
    params = [SamplingParams(max_new_tokens=20, temperature=0.9, top_p=0.9, top_k=50, seed=s,
                             repetition_penalty=1.1, ignore_eos=True) for s in range(len(PROMPTS))]
    together = generator.generate(PROMPTS, params)
    for i, prompt in enumerate(PROMPTS):
        alone = generator.generate(prompt, params[i])[0]
        assert alone.token_ids == together[i].token_ids
    reordered = generator.generate(PROMPTS[::-1] + PROMPTS[:1], params[::-1] + params[:1])
    assert [c.token_ids for c in reordered[:4]] == [c.token_ids for c in together[::-1]]
    assert len({tuple(c.token_ids) for c in together}) == len(PROMPTS)  # the seeds differ


def test_native_seeded_sampling_survives_preemption(tiny):
    """A KV cache of a few blocks forces requests out and back in (recomputed)."""
    roomy = load(tiny, "gpt", "native")
    tight = load(tiny, "gpt", "native", kv_cache_mb=2 * 2 * 16 * 32 * 4 * 5 / 2**20)  # five blocks
    params = [SamplingParams(max_new_tokens=30, temperature=1.0, seed=s, ignore_eos=True) for s in range(4)]
    expected = [c.token_ids for c in roomy.generate(PROMPTS, params)]
    assert [c.token_ids for c in tight.generate(PROMPTS, params)] == expected
    assert tight.scheduler.preemptions > 0
    assert tight.scheduler.backend.cache.free_blocks == tight.scheduler.backend.cache.num_blocks


@pytest.mark.parametrize("family, backend", CASES)
def test_finished_requests_are_not_kept_alive(tiny, family, backend):
    """The generator keeps the sampler it prepared for the last batch, but not that batch's
    requests (histories, detokenizers) once the call has returned."""
    generator = load(tiny, family, backend)
    prompts = ["kept alive? one", "kept alive? two"]  # found among the live objects by these
    generator.generate(prompts, SamplingParams(max_new_tokens=4, repetition_penalty=1.2))
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, Request) and o.completion.prompt in prompts]


@pytest.mark.parametrize("family, backend", CASES)
def test_stream_is_the_generated_text_in_whole_characters(tiny, family, backend):
    generator = load(tiny, family, backend)
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=3, ignore_eos=True)
    pieces = list(generator.stream("héllo", params))
    full = generator.generate("héllo", params)[0]
    assert "".join(pieces) == full.text == generator.tokenizer.decode(full.token_ids)
    for piece in pieces:  # a piece never ends inside a character the full text completes
        assert not piece.endswith("\ufffd") or full.text.count("\ufffd") > 0


@pytest.mark.parametrize("family, backend", CASES)
def test_logprobs_are_the_models_log_softmax(tiny, family, backend):
    generator = load(tiny, family, backend)
    completion = generator.generate("def", SamplingParams(max_new_tokens=3, temperature=0.7, seed=1, logprobs=3,
                                                          ignore_eos=True))[0]
    history = generator.tokenizer.encode("def")
    for token, entry in zip(completion.token_ids, completion.logprobs):
        expected = torch.log_softmax(torch_logits(tiny[family][0], history).double(), -1)
        assert entry.token_id == token
        assert entry.logprob == pytest.approx(float(expected[token]), abs=1e-4)
        assert [t for t, _, _ in entry.top] == expected.topk(3).indices.tolist()
        history.append(token)


@pytest.mark.parametrize("family, backend", CASES)
def test_bad_prompts_fail_alone(tiny, family, backend):
    generator = load(tiny, family, backend)
    too_long = "x " * 200
    results = generator.generate(["def", "", "a\x00b", too_long, "class"],
                                 SamplingParams(max_new_tokens=5, temperature=0.0, ignore_eos=True))
    assert [r.finish_reason for r in results] == ["length", "error", "error", "error" if family == "gpt" else "length",
                                                  "length"]
    assert "prompt: empty" in results[1].error and "NUL" in results[2].error
    if family == "gpt":
        assert "exceed the model's context of 64 tokens" in results[3].error
        truncated = generator.generate(too_long, SamplingParams(max_new_tokens=5, truncate_prompt=True))[0]
        assert truncated.error is None and truncated.prompt_tokens == 64 - 5
    with pytest.raises(AigcError, match="prompt: empty"):
        generator.stream("", SamplingParams())


def test_token_id_prompts_and_their_checks(tiny):
    generator = load(tiny, "gpt", "native")
    ids = generator.tokenizer.encode("def add")
    params = SamplingParams(max_new_tokens=5, temperature=0.0, ignore_eos=True)
    assert generator.generate([ids], params)[0].token_ids == generator.generate("def add", params)[0].token_ids
    assert "token ids must lie in [0, 300)" in generator.generate([[1, 300]], params)[0].error


def test_backend_options_are_checked(tiny):
    with pytest.raises(AigcError, match="lstm models run on native, onnxruntime, got 'torch'"):
        load(tiny, "lstm", "torch")
    with pytest.raises(AigcError, match="kv_dtype: an LSTM has no KV cache"):
        load(tiny, "lstm", "native", kv_dtype="bfloat16")
    with pytest.raises(AigcError, match="dtype: expected one of float32, bfloat16, int8"):
        load(tiny, "lstm", "native", dtype="fp8")
    with pytest.raises(AigcError, match="dtype: the onnxruntime backend runs the file's float32 weights"):
        load(tiny, "gpt", "onnxruntime", dtype="int8")
    with pytest.raises(AigcError, match="dtype: expected one of float32, bfloat16, int8"):
        load(tiny, "gpt", "native", dtype="fp8")
    with pytest.raises(AigcError, match="kv_cache_mb"):
        load(tiny, "gpt", "native", kv_cache_mb=0.001)


def test_files_that_are_not_text_models_are_rejected(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    with pytest.raises(ModelFileError, match="not an ONNX model"):
        TextGenerator.load(str(bad))
    with pytest.raises(ModelFileError, match="expected one of: gpt, lstm"):
        TextGenerator.load("digits-gan")


def test_native_request_larger_than_the_whole_cache_fails_alone(tiny):
    generator = load(tiny, "gpt", "native", kv_cache_mb=2 * 2 * 16 * 32 * 4 * 2 / 2**20)  # two blocks
    results = generator.generate(["def", "class"], [SamplingParams(max_new_tokens=40), SamplingParams(max_new_tokens=5)])
    assert "need 3 KV-cache blocks, the cache holds 2" in results[0].error
    assert results[1].finish_reason in ("length", "stop")
