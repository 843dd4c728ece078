"""Log-probabilities of a prompt's own tokens (what OpenAI's `echo` with `logprobs` returns):
each token's under the model's raw distribution given the tokens before it, with the top n
at that position. The first token has none (nothing comes before it).

The backend gives the logits after every prefix (native: one-token decode rows over a KV
cache of their own; onnxruntime: one run of the graph); they are reduced chunk by chunk
in float64, so a long prompt never holds (tokens, vocab) float64 at once.
"""

from __future__ import annotations

import numpy as np

from .sampling import TokenLogprob
from .tokenizer import TextTokenizer


def prompt_logprobs(model, tokenizer: TextTokenizer, ids: list[int], top_n: int) -> list[TokenLogprob]:
    """One entry per prompt token: the first with logprob None and top None, then each
    token's logprob and the `top_n` most likely tokens at its position (most likely first).
    `model` is a text backend (NativeGpt, GptOnnx, LstmOnnx); with the native one, call
    this where no step runs (the Engine's thread, through Engine.call)."""
    entries = [TokenLogprob(ids[0], tokenizer.token_text(ids[0]), None, None)]
    position = 1
    for logits in model.prompt_logits(ids):
        rows = logits.astype(np.float64)
        rows -= rows.max(axis=1, keepdims=True)
        rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
        for row in rows:
            token = ids[position]
            top = []
            if top_n > 0:
                best = np.argpartition(-row, min(top_n, row.size) - 1)[:top_n]
                best = best[np.argsort(-row[best], kind="stable")]
                top = [(int(i), tokenizer.token_text(int(i)), float(row[i])) for i in best]
            entries.append(TokenLogprob(token, tokenizer.token_text(token), float(row[token]), top))
            position += 1
    return entries
