"""Continuous batching for the native decoder.

Every step: running sequences that need room for their next token get a block (when the
pool is empty the most recently admitted one is preempted: its blocks are freed and it
waits again, to be recomputed later), waiting requests are admitted in arrival order
while blocks and the step's token budget last, and one forward pass runs the new tokens
of all of them — whole prompts and single decode tokens together. Then each sequence
that is due samples its next token; finished requests leave and free their blocks.

A preempted request is recomputed exactly: its prompt is prefilled again as before, then
its generated tokens are fed back one per step (decode rows, as they were first
computed), so its numbers — and so its tokens — do not change.

A step that raises fails the requests it ran and frees their blocks; one cut short by
KeyboardInterrupt recomputes them (as after a preemption) instead, since they may be
other callers' requests. Either way the next step starts from a consistent state.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .batch_sampler import BatchSampler
from .native import NativeGpt
from .request import Request

DEFAULT_MAX_STEP_TOKENS = 4096


def fail_unfinished(requests: list[Request], error: Exception) -> None:
    for request in requests:
        if not request.finished:
            request.fail(f"the generator failed while running this request: {type(error).__name__}: {error}")


class Sequence:
    """A request's place in the KV cache."""

    def __init__(self, request: Request):
        self.request = request
        self.blocks: list[int] = []
        self.cached = 0  # tokens whose keys and values are in the cache

    def token(self, position: int) -> int:
        """The known token at `position` (prompt, then generated), without joining the lists."""
        prompt = self.request.prompt_ids
        return prompt[position] if position < len(prompt) else self.request.generated[position - len(prompt)]

    def due_after(self, new_tokens: int) -> bool:
        """Whether all known tokens are cached once `new_tokens` more are: the step samples a new one."""
        return self.cached + new_tokens == len(self.request.prompt_ids) + len(self.request.generated)


class ContinuousScheduler:
    """The native backend's scheduler. Its face — add, cancel, step, busy, waiting,
    running, check, stats — is StaticScheduler's too (static.py), so the generator and the
    Engine drive every backend alike."""

    def __init__(self, backend: NativeGpt, max_batch_size: int, max_step_tokens: int = DEFAULT_MAX_STEP_TOKENS):
        self.backend = backend
        self._sampler = BatchSampler()
        self._sample = self._sampler  # what a step calls (tests wrap it)
        self.max_batch_size = max_batch_size
        self.max_step_tokens = max_step_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0

    def check(self, request: Request) -> str | None:
        """Why the request could never run here (it needs more blocks than the whole cache), or None."""
        tokens = len(request.prompt_ids) + request.params.max_new_tokens
        needed = self.backend.blocks_for(tokens)
        if needed <= self.backend.cache.num_blocks:
            return None
        return (f"prompt: {len(request.prompt_ids)} tokens + max_new_tokens {request.params.max_new_tokens} "
                f"need {needed} KV-cache blocks, the cache holds {self.backend.cache.num_blocks} (raise kv_cache_mb)")

    def add(self, request: Request) -> None:
        """Queue a request; one that could never run fails at once."""
        problem = self.check(request)
        if problem is not None:
            request.fail(problem)
            return
        self.waiting.append(Sequence(request))

    def cancel(self, request: Request) -> None:
        """Remove a request wherever it is and free its blocks at once."""
        for queue in (self.running, self.waiting):
            for seq in list(queue):
                if seq.request is request:
                    queue.remove(seq)
                    self._free(seq)

    def stats(self) -> dict:
        cache = self.backend.cache
        return {"running": len(self.running), "free_blocks": cache.free_blocks, "num_blocks": cache.num_blocks,
                "preemptions": self.preemptions}

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> None:
        """One forward pass over everything that can run now."""
        self._make_room()
        prompts = self._admit()
        decoding = [seq for seq in self.running if seq not in prompts]
        batch = decoding + prompts
        if not batch:
            return
        # Which rows sample, known before the forward pass: after it the sampler comes at once,
        # while the pool's threads still spin for work.
        due = [i for i, seq in enumerate(decoding) if seq.due_after(1)]
        due += [len(decoding) + i for i, seq in enumerate(prompts) if seq.due_after(len(seq.request.prompt_ids))]
        try:
            logits = self._forward(decoding, prompts)
            if len(due) == len(batch):  # the usual case: no copy of (batch, vocab) logits
                self._sample(logits, [seq.request for seq in batch])
            elif due:
                self._sample(np.ascontiguousarray(logits[due]), [batch[i].request for i in due])
        except BaseException as error:
            self._sampler.reset()  # it may have moved rows on that did not take their token
            if isinstance(error, Exception):  # the batch's requests fail; the scheduler stays usable
                fail_unfinished([seq.request for seq in batch], error)
            else:  # KeyboardInterrupt: the rows, maybe other callers', are recomputed later
                self._recompute_unsampled(batch)
            raise
        finally:
            for seq in batch:
                if seq.request.finished and seq in self.running:
                    self.running.remove(seq)
                    self._free(seq)

    # Internals ----------------------------------------------------------------------

    def _make_room(self) -> None:
        """Each running sequence gets the block its next token needs, preempting the
        latest arrivals while the pool is empty."""
        for seq in list(self.running):
            if seq not in self.running:
                continue  # preempted below, for an earlier sequence
            while self.backend.blocks_for(seq.cached + 1) > len(seq.blocks):
                if self.backend.cache.free_blocks == 0:
                    victim = self.running[-1]
                    self._preempt(victim)
                    if victim is seq:
                        break
                    continue
                seq.blocks += self.backend.cache.allocate(1)

    def _recompute_unsampled(self, batch: list[Sequence]) -> None:
        """After a step cut short (an exception, KeyboardInterrupt): a row whose tokens are
        all cached but whose next token was not sampled would have nothing to feed the next
        step. It is recomputed from scratch, exactly, as after a preemption."""
        for seq in batch:
            if seq in self.running and not seq.request.finished and seq.due_after(0):
                self._preempt(seq)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.cached = 0
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = self.max_step_tokens - len(self.running)
        while self.waiting and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            prompt = len(seq.request.prompt_ids)
            needed = self.backend.blocks_for(prompt + 1)
            if needed > self.backend.cache.free_blocks or (prompt > budget and admitted):
                break
            self.waiting.popleft()
            seq.blocks = self.backend.cache.allocate(needed)
            self.running.append(seq)
            admitted.append(seq)
            budget -= prompt
        return admitted

    def _forward(self, decoding: list[Sequence], prompts: list[Sequence]) -> np.ndarray:
        tokens, positions, lengths, contexts = [], [], [], []
        for seq in decoding:  # the next known token (a replayed one after preemption, or the last sampled)
            tokens.append(seq.token(seq.cached))
            positions.append(seq.cached)
            lengths.append(1)
            contexts.append(seq.cached + 1)
        for seq in prompts:
            prompt = seq.request.prompt_ids
            tokens += prompt
            positions += range(len(prompt))
            lengths.append(len(prompt))
            contexts.append(len(prompt))
        batch = decoding + prompts
        table = np.zeros((len(batch), max(len(seq.blocks) for seq in batch)), np.int32)
        for row, seq in enumerate(batch):
            table[row, :len(seq.blocks)] = seq.blocks
        logits = np.empty((len(batch), self.backend.vocab_size), np.float32)
        self.backend.model.forward(
            np.array(tokens, np.int64), np.array(positions, np.int64),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32), np.array(contexts, np.int32),
            np.array([0] * len(decoding) + [1] * len(prompts), np.uint8), table, self.backend.cache, logits)
        for seq, count in zip(batch, lengths):
            seq.cached += count
        return logits

    def _free(self, seq: Sequence) -> None:
        if seq.blocks:
            self.backend.cache.release(seq.blocks)
            seq.blocks = []
