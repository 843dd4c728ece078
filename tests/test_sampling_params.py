"""SamplingParams' names: max_tokens (vLLM's and OpenAI's) sets max_new_tokens, a contradicting
pair is refused; and respell, which front ends use to name settings the way their users type them."""

import dataclasses

import pytest

from aigc_engine import AigcError, SamplingParams
from aigc_engine.errors import respell


def test_max_tokens_is_max_new_tokens():
    assert SamplingParams(max_tokens=5).max_new_tokens == 5
    assert SamplingParams(max_tokens=5) == SamplingParams(max_new_tokens=5)
    assert SamplingParams(max_tokens=7, max_new_tokens=7).max_new_tokens == 7
    assert SamplingParams(max_tokens=64, max_new_tokens=64).max_new_tokens == 64
    assert SamplingParams().max_new_tokens == 64 and type(SamplingParams().max_new_tokens) is int
    assert dataclasses.replace(SamplingParams(max_tokens=5), temperature=0.0).max_new_tokens == 5


@pytest.mark.parametrize("options, message", [
    ({"max_tokens": 5, "max_new_tokens": 64}, "max_tokens: 5 contradicts max_new_tokens=64"),
    ({"max_tokens": 5, "max_new_tokens": 6}, "max_tokens: 5 contradicts max_new_tokens=6"),
    ({"max_tokens": 0}, "max_tokens: expected an integer >= 1, got 0"),
    ({"max_tokens": "5"}, "max_tokens: expected an integer, got '5'"),
])
def test_bad_max_tokens(options, message):
    with pytest.raises(AigcError, match=message):
        SamplingParams(**options)


def test_respell_changes_whole_settings_only():
    spellings = {"truncate_prompt=True": "--truncate-prompt", "truncate_prompt": "--truncate-prompt",
                 "max_new_tokens": "--max-new-tokens"}
    message = "prompt: 9 tokens + max_new_tokens 4 exceed (truncate_prompt=True keeps the last 2 prompt tokens)"
    assert respell(message, spellings) == \
        "prompt: 9 tokens + --max-new-tokens 4 exceed (--truncate-prompt keeps the last 2 prompt tokens)"
    untouched = "max_new_tokensx and my_max_new_tokens stay"
    assert respell(untouched, spellings) == untouched
    assert respell("--max-new-tokens stays", spellings) == "--max-new-tokens stays"
    assert respell('truncate_prompt=True', {"truncate_prompt=True": '"truncate_prompt": true'}) == \
        '"truncate_prompt": true'
    assert respell("nothing to do", {}) == "nothing to do"
