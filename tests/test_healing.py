"""Token healing (aigc_engine/text/healing.py) on every backend: a prompt that ends in
whitespace backs up over its last token, the first sampled token extends that token's
text (checked against the tokenizer's own decode of every vocabulary entry), the
completion starts right after the prompt, and greedy picks torch's best such token."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aigc_engine import SamplingParams, TextGenerator  # noqa: E402
from text_fixtures import export_tiny, torch_logits  # noqa: E402

torch.set_num_threads(1)
CASES = [("gpt", "native"), ("gpt", "onnxruntime"), ("lstm", "native"), ("lstm", "onnxruntime")]
PROMPTS = ["def ", "x = 1\n", "class A:\n    ", "if x:  "]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-healing")
    return {family: export_tiny(folder, family) for family in ("gpt", "lstm")}


def extending(generator, text: str) -> set[int]:
    """Every id whose own decoded text starts with `text` (the tokenizer's decode, not the
    byte table the runtime uses)."""
    return {i for i in range(generator.vocab_size) if generator.tokenizer.decode([i]).startswith(text)}


@pytest.mark.parametrize("family, backend", CASES)
def test_the_first_token_extends_the_trimmed_whitespace(tiny, family, backend):
    generator = TextGenerator.load(str(tiny[family][1]), backend=backend)
    tokenizer = generator.tokenizer
    checked = 0
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        last = tokenizer.decode(ids[-1:])
        assert last.isspace(), prompt  # each prompt ends in a whitespace-only token
        allowed = extending(generator, last)
        assert len(allowed) < generator.vocab_size / 10  # a real constraint: unhealed draws miss it
        params = [SamplingParams(max_new_tokens=6, temperature=1.5, seed=seed, ignore_eos=True) for seed in range(12)]
        for completion in generator.generate([prompt] * len(params), params):
            assert completion.prompt_tokens == len(ids) - 1
            assert completion.token_ids[0] in allowed
            # The whole text is the healed prompt's tokens then the sampled ones.
            assert tokenizer.decode(ids[:-1] + completion.token_ids) == prompt + completion.text
            checked += 1
    assert checked == 12 * len(PROMPTS)


@pytest.mark.parametrize("family, backend", CASES)
def test_greedy_picks_the_best_token_that_extends_the_prompt(tiny, family, backend):
    model, path = tiny[family]
    generator = TextGenerator.load(str(path), backend=backend)
    for prompt in PROMPTS:
        ids = generator.tokenizer.encode(prompt)
        allowed = sorted(extending(generator, generator.tokenizer.decode(ids[-1:])))
        logits = torch_logits(model, ids[:-1]).detach().numpy()
        expected = allowed[int(np.argmax(logits[allowed]))]
        (completion,) = generator.generate(prompt, SamplingParams(max_new_tokens=1, temperature=0.0,
                                                                  ignore_eos=True))
        assert completion.token_ids == [expected], prompt


@pytest.mark.parametrize("family, backend", CASES)
def test_healing_off_token_ids_and_other_endings_run_the_prompt_as_it_is(tiny, family, backend):
    generator = TextGenerator.load(str(tiny[family][1]), backend=backend)
    ids = generator.tokenizer.encode("def ")
    off = SamplingParams(max_new_tokens=8, temperature=0.9, seed=4, ignore_eos=True, token_healing=False)
    on = SamplingParams(max_new_tokens=8, temperature=0.9, seed=4, ignore_eos=True)
    unhealed, as_ids = generator.generate(["def ", ids], [off, on])
    assert unhealed.prompt_tokens == as_ids.prompt_tokens == len(ids)
    assert unhealed.token_ids == as_ids.token_ids
    # A prompt whose last token is not whitespace is not touched.
    a, b = generator.generate(["def f(x):", "def f(x):"], [on, off])
    assert a.token_ids == b.token_ids and a.prompt_tokens == b.prompt_tokens


def test_a_healed_request_does_not_depend_on_its_batch_and_streams_its_text(tiny):
    generator = TextGenerator.load(str(tiny["gpt"][1]))
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=9, ignore_eos=True, stop=["\n\n"])
    (alone,) = generator.generate("class A:\n    ", params)
    others = SamplingParams(max_new_tokens=14, temperature=0.7, seed=1, ignore_eos=True)
    batch = generator.generate(["x", "class A:\n    ", "def "], [others, params, others])
    assert batch[1].token_ids == alone.token_ids and batch[1].text == alone.text
    assert "".join(generator.stream("class A:\n    ", params)) == alone.text


@pytest.mark.parametrize("family, backend", CASES)
def test_logit_bias_still_applies_to_the_first_token(tiny, family, backend):
    generator = TextGenerator.load(str(tiny[family][1]), backend=backend)
    greedy = SamplingParams(max_new_tokens=1, temperature=0.0, ignore_eos=True)
    (first,) = generator.generate("def ", greedy)
    banned = first.token_ids[0]
    (second,) = generator.generate("def ", SamplingParams(max_new_tokens=1, temperature=0.0, ignore_eos=True,
                                                          logit_bias={banned: -100.0}))
    assert second.token_ids[0] != banned
    assert generator.tokenizer.decode(second.token_ids).startswith(" ")
