"""Continuous batching for the native backends (the GPT decoder, the LSTM): a thin face
over the native batch (aigc_engine._C.Generation, csrc/runtime/generation.h).

The native batch owns the waiting queue and the running sequences. Every step, in one
call without the GIL: running sequences that need room for their next token get a block
(when the pool is empty the most recently admitted one is preempted: its blocks are freed
and it waits again, to be recomputed later), waiting requests are admitted in arrival
order while blocks and the step's token budget last, one forward pass runs the new tokens
of all of them — whole prompts and single decode tokens together — and each sequence
that is due samples its next token with its own params; EOS and max_new_tokens end a
sequence there and free its blocks. Python then hands each new token to its Request
(detokenizing, stop strings, log-probabilities); a stop string ends the request here and
takes it out of the native batch.

A preempted request is recomputed exactly: its prompt is prefilled again as before, then
its generated tokens are fed back one per step (decode rows, as they were first
computed), so its numbers — and so its tokens — do not change.

A step that raises fails the requests it ran and frees their blocks; one cut short by
KeyboardInterrupt recomputes them (as after a preemption) instead, since they may be
other callers' requests. Either way the next step starts from a consistent state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .. import _C
from .native import NativeGpt
from .native_lstm import NativeLstm
from .request import Request

DEFAULT_MAX_STEP_TOKENS = 4096
RUNNING, STOPPED_EOS, STOPPED_LENGTH, ERROR = range(4)  # a row's state after a step (RowState)
_NO_TOP: list = []


def failure_message(error: Exception) -> str:
    return f"the generator failed while running this request: {type(error).__name__}: {error}"


def fail_unfinished(requests: list[Request], error: Exception) -> None:
    for request in requests:
        if not request.finished:
            request.fail(failure_message(error))


class Sequence(NamedTuple):
    """A request in the native batch, as `waiting` and `running` list it."""
    request: Request


class StepResult(NamedTuple):
    """The rows of a step that produced a token (or failed), in batch order."""
    ids: list[int]
    tokens: list[int]
    states: list[int]                                        # RUNNING, STOPPED_EOS, STOPPED_LENGTH, ERROR
    logprobs: dict[int, tuple[float, list, list]] | None     # id -> (logprob, top ids, top logprobs), if asked
    errors: dict[int, str] | None                            # id -> why its row could not be sampled


class _Queue:
    """The native batch's waiting or running sequences: len() is cheap, iterating lists them."""

    def __init__(self, scheduler: ContinuousScheduler, running: bool):
        self._scheduler, self._running = scheduler, running

    def __len__(self) -> int:
        native = self._scheduler._native
        return native.num_running if self._running else native.num_waiting

    def __iter__(self):
        native, requests = self._scheduler._native, self._scheduler._requests
        ids = native.running_ids() if self._running else native.waiting_ids()
        return iter([Sequence(requests[i]) for i in ids])


class ContinuousScheduler:
    """The native backend's scheduler. Its face — add, cancel, step, busy, waiting,
    running, check, stats — is StaticScheduler's too (static.py), so the generator and the
    Engine drive every backend alike."""

    def __init__(self, backend: NativeGpt | NativeLstm, max_batch_size: int,
                 max_step_tokens: int = DEFAULT_MAX_STEP_TOKENS):
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_step_tokens = max_step_tokens
        self._native = _C.Generation(backend.model, backend.cache, max_batch_size, max_step_tokens)
        self._requests: dict[int, Request] = {}  # native id -> request
        self._ids: dict[Request, int] = {}
        self._next_id = 0
        eos = backend.config.get("eos_token_id")
        self._eos = eos if isinstance(eos, int) and 0 <= eos < backend.vocab_size else -1
        self._sample = self._accept  # what a step calls with its results (tests wrap it)
        self.waiting = _Queue(self, running=False)
        self.running = _Queue(self, running=True)

    @property
    def preemptions(self) -> int:
        return self._native.preemptions

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
        p, healing = request.params, request.healing
        id_ = self._next_id
        self._native.add(id_, request.prompt_ids, request.seed, p.temperature, min(p.top_k, self.backend.vocab_size),
                         p.top_p, p.min_p, p.repetition_penalty, p.presence_penalty, p.frequency_penalty,
                         list(p.logit_bias), list(p.logit_bias.values()),
                         -1 if p.ignore_eos else self._eos, p.max_new_tokens,
                         -1 if p.logprobs is None else p.logprobs,
                         *((healing.first_bias_ids, healing.first_bias_values) if healing else ()))
        self._next_id += 1
        self._requests[id_] = request
        self._ids[request] = id_

    def cancel(self, request: Request) -> None:
        """Remove a request wherever it is and free its blocks at once."""
        id_ = self._ids.get(request)
        if id_ is not None:
            self._leave(id_)

    def stats(self) -> dict:
        native = self._native
        return {"running": native.num_running, "free_blocks": native.free_blocks, "num_blocks": native.num_blocks,
                "preemptions": native.preemptions}

    @property
    def busy(self) -> bool:
        return bool(self._native.num_waiting or self._native.num_running)

    def step(self) -> None:
        """One step of the native batch, then each new token to its request."""
        if not self._requests:
            return
        try:
            result = StepResult(*self._native.step())
        except Exception as error:  # the batch's requests fail; the scheduler stays usable
            self._fail_running([], error)
            raise
        except BaseException:  # KeyboardInterrupt as the step returned: its tokens never reached Python
            for id_, request in list(self._requests.items()):
                self._native.rewind(id_, len(request.generated))
            raise
        requests = [self._requests[i] for i in result.ids]
        try:
            self._sample(result, requests)
        except BaseException as error:
            if isinstance(error, Exception):
                self._fail_running(requests, error)
            else:  # KeyboardInterrupt: the rows, maybe other callers', are recomputed later
                for id_, request in zip(result.ids, requests):
                    if not request.finished:
                        self._native.rewind(id_, len(request.generated))
            raise
        finally:
            for id_, request in zip(result.ids, requests):
                if request.finished:
                    self._leave(id_)

    # Internals ----------------------------------------------------------------------

    def _accept(self, result: StepResult, requests: list[Request]) -> None:
        """Each row's request accepts its token (or fails: a row the sampler could not draw from)."""
        logprobs, errors = result.logprobs, result.errors
        for id_, token, state, request in zip(result.ids, result.tokens, result.states, requests):
            if state == ERROR:
                request.fail(f"sampling failed: {errors[id_]}")
            elif logprobs is not None and id_ in logprobs:
                request.accept(token, *logprobs[id_])
            else:
                request.accept(token, math.nan, _NO_TOP, _NO_TOP)
            if state != RUNNING and not request.finished:  # the native stop and Request's disagree
                request.fail(f"the native batch ended this request (state {state}) but the request did not")

    def _fail_running(self, requests: list[Request], error: Exception) -> None:
        """After a step that raised: its requests fail and leave the batch."""
        ran = requests + [self._requests[i] for i in self._native.running_ids()]
        fail_unfinished(ran, error)
        for request in ran:
            self.cancel(request)

    def _leave(self, id_: int) -> None:
        self._native.remove(id_)
        request = self._requests.pop(id_, None)
        if request is not None:
            self._ids.pop(request, None)
