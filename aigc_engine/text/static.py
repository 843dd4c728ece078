"""StaticScheduler: the onnxruntime backends (GPT and LSTM) under the scheduler's face.

Their state (the KV cache of the graph, the LSTM's h and c) lives in arrays per batch, so
what waits runs as one batch of up to max_batch_size requests: a prefill, then one decode
step at a time; finished and cancelled requests leave the batch at once (their rows are
dropped from the state); the next batch starts when the batch has ended. The face — add,
cancel, step, busy, waiting, running, check, stats — is ContinuousScheduler's
(scheduler.py), so the generator and the Engine drive every backend alike.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .backends import GptOnnx, LstmOnnx
from .batch_sampler import BatchSampler
from .request import Request
from .scheduler import fail_unfinished


class StaticScheduler:
    def __init__(self, backend: GptOnnx | LstmOnnx, max_batch_size: int):
        self.backend = backend
        self._sampler = BatchSampler()
        self._sample = self._sampler  # what a step calls (tests wrap it)
        self.max_batch_size = max_batch_size
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # the batch, in the rows' order
        self._state = None  # the backend's state of the batch (past keys and values, or h and c)

    def check(self, request: Request) -> str | None:
        return None  # the context was checked when the request was made; no cache to fill

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def cancel(self, request: Request) -> None:
        if request in self.waiting:
            self.waiting.remove(request)
        elif request in self.running:
            self._keep([r for r in self.running if r is not request])

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def stats(self) -> dict:
        return {"running": len(self.running)}

    def step(self) -> None:
        """A new batch's prefill, or one decode step of the batch; then each row samples."""
        try:
            if not self.running:
                if not self.waiting:
                    return
                count = min(len(self.waiting), self.max_batch_size)
                self.running = [self.waiting.popleft() for _ in range(count)]
                logits, self._state = self.backend.start([r.prompt_ids for r in self.running])
            else:
                last = np.array([r.last_token for r in self.running], np.int64)
                logits, self._state = self.backend.step(self._state, last)
            self._sample(logits, self.running)
        except BaseException as error:
            # The batch's state may be half-way through a step: its requests fail and the
            # batch is dropped (KeyboardInterrupt included: a row may have taken its token).
            self._sampler.reset()
            fail_unfinished(self.running, error if isinstance(error, Exception) else RuntimeError("interrupted"))
            raise
        finally:
            self._keep([r for r in self.running if not r.finished])

    def _keep(self, requests: list[Request]) -> None:
        """Keep only these requests' rows of the batch's state."""
        if len(requests) == len(self.running):
            return
        if not requests:
            self.running, self._state = [], None
            return
        position = {id(r): row for row, r in enumerate(self.running)}
        self._state = self.backend.keep(self._state, np.array([position[id(r)] for r in requests]))
        self.running = requests
