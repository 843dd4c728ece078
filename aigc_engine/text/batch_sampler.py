"""BatchSampler: the next token of every request of a batch, each with its own params.

The onnxruntime backends' scheduler (static.py) samples through it; the native backend
samples inside its C++ step. The native sampler (ops.Sampler) is prepared once for a
batch's requests and reused step after step while the batch stays the same; each row's
token is drawn from one Philox uniform keyed by (the request's seed, its step), so a request's tokens do not depend on its neighbours. A row the
sampler cannot draw from (logits that turn NaN or +inf) fails its own request only.
"""

from __future__ import annotations

import weakref

import numpy as np

from .. import ops
from .request import Request


class BatchSampler:
    def __init__(self):
        # The batch's requests held weakly: a finished one is not kept alive while the generator idles.
        self._cache: tuple[list[weakref.ref[Request]], ops.Sampler | None] = ([], None)

    def __call__(self, logits: np.ndarray, requests: list[Request]) -> None:
        """Each request accepts its next token (logits: float32 (len(requests), vocab), scratch)."""
        result = self._prepared(requests, logits.shape[1])(logits)
        for row, request in enumerate(requests):
            if result.errors and row in result.errors:
                request.fail(f"sampling failed: {result.errors[row]}")
                continue
            request.accept(int(result.tokens[row]), float(result.logprobs[row]),
                           result.top_ids[row], result.top_logprobs[row])

    def reset(self) -> None:
        """Forget the prepared sampler (after a step cut short, it may be ahead of its requests)."""
        self._cache = ([], None)

    def _prepared(self, requests: list[Request], vocab: int) -> ops.Sampler:
        """The sampler prepared for this batch's requests, prepared again only when the
        batch's requests change (at batch 32, building the parameter arrays every step cost
        as much as the sampling). It holds the requests' histories for the penalties and
        their steps, and adds each token it samples, as accept() does to the request; the
        logits of a step are scratch once sampled, so it may edit them in place."""
        cached_requests, cached = self._cache
        if len(cached_requests) == len(requests) and all(a() is b for a, b in zip(cached_requests, requests)):
            return cached
        params = [r.params for r in requests]
        # A healed request's first token has a bias of its own (healing.py): a sampler
        # prepared with it serves that one step and is not kept.
        healing_first = [r.healing is not None and not r.generated for r in requests]
        biases = [(r.healing.first_bias_ids, r.healing.first_bias_values) if first else
                  (list(r.params.logit_bias), list(r.params.logit_bias.values()))
                  for r, first in zip(requests, healing_first)]
        bias = history = None
        if any(ids for ids, _ in biases):
            bias = (np.array([i for ids, _ in biases for i in ids], np.int64),
                    np.array([v for _, values in biases for v in values], np.float32),
                    np.concatenate([[0], np.cumsum([len(ids) for ids, _ in biases])]).astype(np.int64))
        if any(p.repetition_penalty != 1 or p.presence_penalty or p.frequency_penalty for p in params):
            histories = [r.history() for r in requests]
            offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
            history = dict(history=np.concatenate(histories), history_offsets=offsets,
                           prompt_lens=np.array([len(r.prompt_ids) for r in requests], np.int64))
        sampler = ops.Sampler(
            len(requests), vocab, seeds=np.array([r.seed for r in requests], np.uint64),
            steps=np.array([len(r.generated) for r in requests], np.uint64),
            temperature=np.array([p.temperature for p in params], np.float32),
            top_k=np.array([min(p.top_k, vocab) for p in params], np.int32),
            top_p=np.array([p.top_p for p in params], np.float32),
            min_p=np.array([p.min_p for p in params], np.float32),
            repetition_penalty=np.array([p.repetition_penalty for p in params], np.float32),
            presence_penalty=np.array([p.presence_penalty for p in params], np.float32),
            frequency_penalty=np.array([p.frequency_penalty for p in params], np.float32),
            **(history or {}), logit_bias=bias, num_logprobs=max((p.logprobs or 0) for p in params),
            logprobs=any(p.logprobs is not None for p in params), overwrite_logits=True)
        self._cache = ([], None) if any(healing_first) else ([weakref.ref(r) for r in requests], sampler)
        return sampler
