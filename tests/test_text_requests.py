"""SamplingParams checks, UTF-8-safe incremental decoding, stop strings and finish reasons
— the request bookkeeping around the model, with tokens fed by hand."""

import numpy as np
import pytest

from aigc_engine import AigcError, SamplingParams
from aigc_engine.text.request import Request
from aigc_engine.text.sampling import Completion
from aigc_engine.text.tokenizer import IncrementalDetokenizer, TextTokenizer
from text_tokenizer import text_tokenizer

TOKENIZER = text_tokenizer()
EOS = 0
NO_TOP = np.zeros(0, np.int64), np.zeros(0, np.float32)


@pytest.mark.parametrize("field, value, message", [
    ("max_new_tokens", 0, "max_new_tokens: expected an integer >= 1, got 0"),
    ("temperature", -0.5, r"temperature: expected a value in \[0, 100\], got -0.5"),
    ("temperature", float("nan"), "temperature: expected a finite number"),
    ("top_p", 0.0, r"top_p: expected a value in \(0, 1\], got 0.0"),
    ("top_p", 1.5, r"top_p: expected a value in \(0, 1\]"),
    ("top_k", -1, "top_k: expected an integer >= 0, got -1"),
    ("min_p", 2.0, r"min_p: expected a value in \[0, 1\]"),
    ("repetition_penalty", 0.0, "repetition_penalty"),
    ("presence_penalty", 3.0, "presence_penalty"),
    ("seed", -1, "seed"),
    ("seed", 2**64, "seed"),
    ("logprobs", 21, r"logprobs: expected an integer in \[0, 20\]"),
    ("stop", ("",), "stop: expected a non-empty string"),
    ("logit_bias", {5: 1000.0}, r"logit_bias\[5\]"),
    ("max_new_tokens", True, "max_new_tokens: expected an integer"),
])
def test_bad_sampling_params_name_the_field(field, value, message):
    with pytest.raises(AigcError, match=message):
        SamplingParams(**{field: value})


def test_a_single_stop_string_becomes_a_tuple():
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)


@pytest.mark.parametrize("prompt, message", [
    ("", "prompt: empty"),
    ("a\x00b", "prompt: contains a NUL character at position 1"),
    ("bad \udc80 surrogate", "prompt: not valid UTF-8"),
    (b"bytes", "prompt: expected a string, got bytes"),
])
def test_bad_prompts_are_rejected(prompt, message):
    with pytest.raises(AigcError, match=message):
        TOKENIZER.encode(prompt)


@pytest.mark.parametrize("text", ["naïve café — 日本語 🙂 text", "def main():\n    return 0\n", "🙂🙂 日本"])
def test_incremental_decoding_never_splits_a_character(text):
    ids = TOKENIZER.encode(text)
    detokenizer = IncrementalDetokenizer(TOKENIZER)
    pieces = [detokenizer.push(i) for i in ids] + [detokenizer.flush()]
    assert "".join(pieces) == text == TOKENIZER.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


def test_byte_level_decoding_equals_the_tokenizers_on_any_ids():
    """The byte table (one look-up per token) and the tokenizer's windows give the same
    pieces' concatenation as decode(), for random ids: broken characters, EOS included."""
    assert TOKENIZER.token_bytes is not None
    windows = TextTokenizer(TOKENIZER._tokenizer)
    windows._token_bytes = None  # the general path
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.integers(0, TOKENIZER.vocab_size, rng.integers(1, 40)).tolist()
        texts = []
        for tokenizer in (TOKENIZER, windows):
            detokenizer = IncrementalDetokenizer(tokenizer)
            texts.append("".join([detokenizer.push(i) for i in ids] + [detokenizer.flush()]))
        assert texts[0] == texts[1] == TOKENIZER.decode(ids), ids


def test_a_tokenizer_that_is_not_byte_level_decodes_through_windows():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = TextTokenizer(words)
    assert tokenizer.token_bytes is None
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert "".join([detokenizer.push(i) for i in (0, 1, 0)] + [detokenizer.flush()]) == tokenizer.decode([0, 1, 0])


def feed(text: str, params: SamplingParams, then_eos: bool = False) -> tuple[Request, list[str]]:
    """Push the tokens of `text` into a request as if sampled; collect what it streams."""
    request = Request(Completion(prompt="p"), [1, 2], params, seed=0, tokenizer=TOKENIZER, eos_token_id=EOS)
    streamed = []
    for token in TOKENIZER.encode(text) + ([EOS] if then_eos else []):
        if request.finished:
            break
        request.accept(token, -1.0, *NO_TOP)
        streamed.append(request.take_stream_text())
    return request, streamed


def test_stop_string_ends_the_text_before_it_and_is_never_streamed():
    request, streamed = feed("for i in range(10):\n    print(i)\n", SamplingParams(max_new_tokens=100, stop=("range",)))
    assert request.completion.text == "for i in "
    assert request.completion.finish_reason == "stop"
    assert "".join(streamed) == "for i in "


def test_stop_string_split_across_tokens_is_found():
    request, streamed = feed("def main():\n    return 0\n", SamplingParams(max_new_tokens=100, stop=(":\n   ",)))
    assert request.completion.text == "def main()"
    assert "".join(streamed) == "def main()"


def test_length_and_eos_finish_reasons():
    request, _ = feed("for i in range(10):\n", SamplingParams(max_new_tokens=3))
    assert request.completion.finish_reason == "length" and len(request.generated) == 3
    request, _ = feed("def", SamplingParams(max_new_tokens=100), then_eos=True)
    assert request.completion.finish_reason == "stop"
    assert request.completion.text == "def"
    assert EOS not in request.completion.token_ids and request.generated[-1] == EOS


def test_ignore_eos_keeps_going():
    request, _ = feed("def", SamplingParams(max_new_tokens=100, ignore_eos=True), then_eos=True)
    assert not request.finished and request.completion.token_ids[-1] == EOS


def test_the_held_back_tail_is_the_longest_start_of_a_stop_string():
    rng = np.random.default_rng(1)
    for _ in range(300):
        stops = tuple("".join(rng.choice(list("abc"), rng.integers(1, 6))) for _ in range(rng.integers(1, 4)))
        text = "".join(rng.choice(list("abc"), rng.integers(0, 12)))
        request = Request(Completion(prompt="p"), [1], SamplingParams(stop=stops), 0, TOKENIZER, EOS)
        brute = max([k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])], default=0)
        assert request._stop_prefix_length(text) == brute, (text, stops)
