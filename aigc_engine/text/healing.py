"""Token healing for prompts that end in whitespace.

A byte-level BPE (GPT-2's kind, every one `aigc train` writes) keeps a word's leading
space inside the word's token (" return"), so a prompt that ends in a space ends in a
lone " " token: a boundary the model rarely saw in training, after which it samples
poorly (`def ` → `def  This This ...`). Healing backs up over such a whitespace-only last
token and lets the model choose a token that begins with its text: at the first step
every token whose bytes do not start with the removed token's bytes is banned (the
removed token itself stays allowed), and the removed text is taken back off the front of
the completion, so that prompt + completion still starts with the prompt exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .tokenizer import TextTokenizer


class Healing(NamedTuple):
    text: str                       # the removed token's text, taken off the front of the completion
    first_bias_ids: list[int]       # the first step's logit bias: the request's own,
    first_bias_values: list[float]  # and -inf on every token that does not extend `text`


def heal(ids: list[int], logit_bias: dict[int, float], tokenizer: TextTokenizer,
         vocab_size: int) -> tuple[list[int], Healing | None]:
    """The prompt ids to run and how to heal them; (ids, None) when the last token is not
    whitespace, is the only one, or the tokenizer is not byte-level."""
    texts = tokenizer.token_texts
    if len(ids) < 2 or texts is None:
        return ids, None
    last = ids[-1]
    text = texts[last] if last < len(texts) else None
    if not text or not text.isspace():
        return ids, None
    banned = np.ones(vocab_size, bool)
    banned[tokenizer.tokens_extending(last, vocab_size)] = False
    kept_bias = {token: value for token, value in logit_bias.items() if not banned[token]}
    bias_ids = np.flatnonzero(banned).tolist() + list(kept_bias)
    bias_values = [-np.inf] * (len(bias_ids) - len(kept_bias)) + list(kept_bias.values())
    return ids[:-1], Healing(text, bias_ids, bias_values)
