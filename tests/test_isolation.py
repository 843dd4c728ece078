"""One bad request never fails another: values that break in float32 are refused when the
params are made, a row the sampler cannot draw from fails its own request, ids the model
does not have are refused per prompt, and after any exception — KeyboardInterrupt
included — the generator is as before the call (every KV block free, the next call gives
the same tokens). Several threads may share one generator."""

import threading

import pytest

torch = pytest.importorskip("torch")

from tokenizers import Tokenizer  # noqa: E402

from aigc_engine import AigcError, SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.serving.engine import Engine, RequestFailed  # noqa: E402
from aigc_engine.text.tokenizer import TextTokenizer  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402

torch.set_num_threads(1)
CASES = [("gpt", "native"), ("gpt", "onnxruntime"), ("lstm", "native"), ("lstm", "onnxruntime")]
PROMPTS = ["def add(a, b):", "class", "héllo wörld 😀", "x", "import os", "for i in", "y = ", "# a"] * 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-isolation")
    return {family: export_tiny(folder, family)[1] for family in ("gpt", "lstm")}


def load(tiny, family, backend, **options) -> TextGenerator:
    return TextGenerator.load(str(tiny[family]), backend=backend, **options)


def seeded(seed: int, **options) -> SamplingParams:
    return SamplingParams(max_new_tokens=12, temperature=0.9, top_k=40, seed=seed, ignore_eos=True,
                          repetition_penalty=1.1, **options)


def unchecked(params: SamplingParams, **values) -> SamplingParams:
    """Params carrying values the checks would refuse: what reaches the kernels if a check is missed."""
    for name, value in values.items():
        object.__setattr__(params, name, value)
    return params


def alone(generator: TextGenerator) -> list[list[int]]:
    return [generator.generate(p, seeded(i))[0].token_ids for i, p in enumerate(PROMPTS)]


def assert_idle(generator: TextGenerator) -> None:
    assert not generator.scheduler.busy
    if generator.backend == "native":
        cache = generator.scheduler.backend.cache
        assert cache.free_blocks == cache.num_blocks


REFUSED = [
    ("top_p", 1e-46, r"top_p: expected a value in \(0, 1\], got 1e-46 \(0.0 in float32\)"),
    ("top_p", 5e-324, "0.0 in float32"),
    ("repetition_penalty", 1e-46, r"repetition_penalty: expected a value in \[0.01, 10\]"),
    ("repetition_penalty", 1e-39, r"repetition_penalty: expected a value in \[0.01, 10\]"),
    ("temperature", 1e39, "temperature: expected a finite number"),
    ("presence_penalty", 10**400, "presence_penalty: expected a finite number, got an integer of"),
    ("seed", 10**5000, "seed: expected an integer in .*, got an integer of"),
    ("max_new_tokens", "12", "max_new_tokens: expected an integer, got '12'"),
    ("stop", ["x"] * 17, "stop: at most 16 stop strings, got 17"),
    ("stop", "y" * 257, "stop: each stop string at most 256 characters, got one of 257"),
    ("logit_bias", {10**5000: 1.0}, "logit_bias token id: expected an integer in"),
]


@pytest.mark.parametrize("name, value, message", REFUSED, ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(REFUSED)])
def test_values_that_break_in_float32_or_stall_are_refused_by_name(name, value, message):
    with pytest.raises(AigcError, match=message):
        SamplingParams(**{name: value})


@pytest.mark.parametrize("family, backend", CASES)
def test_a_row_the_sampler_cannot_draw_from_fails_alone(tiny, family, backend):
    """A penalty that overflows a logit to +inf (1e-39 passed the old check) fails its own
    request; the 16 others get the tokens they get alone."""
    generator = load(tiny, family, backend)
    expected = alone(generator)
    hostile = unchecked(seeded(99), repetition_penalty=1e-39)
    results = generator.generate(PROMPTS[:8] + ["def"] + PROMPTS[8:], [seeded(i) for i in range(8)] + [hostile] +
                                 [seeded(i) for i in range(8, 16)])
    assert results[8].finish_reason == "error" and "sampling failed: logits: row" in results[8].error
    assert "+inf" in results[8].error
    assert [r.token_ids for r in results[:8] + results[9:]] == expected
    assert_idle(generator)
    assert alone(generator) == expected


def with_added_tokens(generator: TextGenerator) -> int:
    """Give the generator a tokenizer that knows ids past the model's vocabulary; the first such id."""
    tokenizer = Tokenizer.from_str(generator.artifact.tokenizer_json)
    while tokenizer.get_vocab_size(with_added_tokens=True) <= generator.vocab_size:
        tokenizer.add_tokens([f"<added{tokenizer.get_vocab_size(with_added_tokens=True)}>"])
    tokenizer.add_tokens(["<hostile>"])
    generator.tokenizer = TextTokenizer(tokenizer)
    return tokenizer.token_to_id("<hostile>")


@pytest.mark.parametrize("family, backend", CASES)
def test_ids_past_the_models_vocabulary_fail_their_prompt_only(tiny, family, backend):
    generator = load(tiny, family, backend)
    expected = alone(generator)
    hostile_id = with_added_tokens(generator)
    assert hostile_id >= generator.vocab_size
    prompts = PROMPTS + ["def <hostile>", "def"]
    params = [seeded(i) for i in range(16)] + [seeded(0), seeded(0, logit_bias={hostile_id: 5.0})]
    results = generator.generate(prompts, params)
    vocab = generator.vocab_size
    assert results[16].error == f"prompt: token id {hostile_id} is outside the model's vocabulary of {vocab} tokens"
    assert results[17].error == f"logit_bias: token id {hostile_id} is outside the model's vocabulary of {vocab} tokens"
    assert [r.token_ids for r in results[:16]] == expected


class FailOnce:
    """Wraps a callable; its n-th call raises `error` instead."""

    def __init__(self, call, error: BaseException, n: int = 1):
        self.call, self.error, self.left = call, error, n

    def __call__(self, *args, **kwargs):
        self.left -= 1
        if self.left == 0:
            raise self.error
        return self.call(*args, **kwargs)


def break_sampler(generator: TextGenerator, error: BaseException, n: int) -> None:
    generator.scheduler._sample = FailOnce(generator.scheduler._sample, error, n)


@pytest.mark.parametrize("family, backend", CASES)
def test_a_failed_step_fails_its_call_and_leaves_the_generator_usable(tiny, family, backend):
    generator = load(tiny, family, backend)
    expected = alone(generator)
    break_sampler(generator, RuntimeError("boom"), n=3)
    results = generator.generate(PROMPTS, [seeded(i) for i in range(16)])
    assert {r.finish_reason for r in results} == {"error"}
    assert "the generator failed while running this request: RuntimeError: boom" in results[0].error
    assert_idle(generator)
    assert alone(generator) == expected


@pytest.mark.parametrize("family, backend", CASES)
def test_keyboard_interrupt_mid_call_leaves_the_generator_as_before(tiny, family, backend):
    generator = load(tiny, family, backend)
    expected = alone(generator)
    break_sampler(generator, KeyboardInterrupt(), n=4)
    with pytest.raises(KeyboardInterrupt):
        generator.generate(PROMPTS, [seeded(i) for i in range(16)])
    assert_idle(generator)
    assert alone(generator) == expected


def test_an_interrupted_step_does_not_lose_other_callers_requests(tiny):
    """The scheduler recomputes rows whose step was cut short: the Engine's other requests
    (sharing the batch with the interrupted one) still get their own tokens."""
    generator = load(tiny, "gpt", "native")
    expected = alone(generator)
    scheduler = generator.scheduler
    for i, prompt in enumerate(PROMPTS):
        scheduler.add(generator._requests([prompt], seeded(i))[0])
    requests = [seq.request for seq in scheduler.waiting]
    scheduler.step()
    scheduler._sample = FailOnce(scheduler._sample, KeyboardInterrupt(), n=2)
    for _ in range(2):
        try:
            scheduler.step()
        except KeyboardInterrupt:
            pass
    while scheduler.busy:
        scheduler.step()
    assert [r.generated for r in requests] == expected


@pytest.mark.parametrize("family, backend", CASES)
def test_a_stream_left_early_frees_its_request(tiny, family, backend):
    generator = load(tiny, family, backend)
    stream = generator.stream("def add(a, b):", seeded(0, stop=()))
    next(stream)
    stream.close()
    assert_idle(generator)
    assert alone(generator)[0] == generator.generate("def add(a, b):", seeded(0))[0].token_ids


@pytest.mark.parametrize("family, backend", CASES)
def test_threads_sharing_one_generator_get_what_they_get_alone(tiny, family, backend):
    """Eight threads, half generating and half streaming, take turns step by step."""
    generator = load(tiny, family, backend)
    expected = [generator.generate(p, seeded(i))[0].text for i, p in enumerate(PROMPTS[:8])]
    got: dict[int, str] = {}
    errors = []

    def call(i: int) -> None:
        try:
            if i % 2:
                got[i] = generator.generate(PROMPTS[i], seeded(i))[0].text
            else:
                got[i] = "".join(generator.stream(PROMPTS[i], seeded(i)))
        except Exception as error:  # noqa: BLE001 — collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert [got.get(i) for i in range(8)] == expected
    assert_idle(generator)


def test_the_engine_fails_only_the_hostile_request(tiny):
    generator = load(tiny, "gpt", "native")
    expected = alone(generator)
    with Engine(generator) as engine:
        handles = [engine.submit(p, seeded(i)) for i, p in enumerate(PROMPTS[:8])]
        bad = engine.submit("def", unchecked(seeded(99), repetition_penalty=1e-39))
        handles += [engine.submit(p, seeded(8 + i)) for i, p in enumerate(PROMPTS[8:])]
        with pytest.raises(RequestFailed, match=r"\+inf"):
            bad.result(60)
        assert [h.result(60).token_ids for h in handles] == expected


@pytest.mark.parametrize("backend", ["native", "onnxruntime"])
def test_an_lstm_has_a_context_limit(tiny, backend):
    generator = load(tiny, "lstm", backend)
    assert generator.context_length == 4096
    result = generator.generate("x", SamplingParams(max_new_tokens=10**9))[0]
    assert "exceed the model's context of 4096 tokens" in result.error
    long_prompt = generator.generate([[5] * 5000], SamplingParams(max_new_tokens=4))[0]
    assert "5000 tokens + max_new_tokens 4 exceed" in long_prompt.error
