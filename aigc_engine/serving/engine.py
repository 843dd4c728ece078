"""Engine: one TextGenerator serving many callers at once, from threads or asyncio.

A background thread owns the generator. Callers hand requests in through a lock-guarded
inbox (`submit`, thread-safe, never blocks on the model) and get a RequestHandle: its
result, its text as it is produced, or a cancel. Between steps the thread moves the
inbox into the batch, applies cancels (a cancelled request leaves the batch and frees
its KV blocks before the next step), steps, and hands the new text to the handles.
Every backend runs under its scheduler's add / cancel / step face: on the native backend
every request joins the continuous batch at once; on onnxruntime (LSTM, or GPT by
choice) what is queued runs as one static batch (up to max_batch_size), then the next.
Each request keeps its own params and seed, so its tokens are the ones it would get alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future

from ..errors import AigcError
from ..text.generator import TextGenerator
from ..text.request import Request
from ..text.sampling import Completion, SamplingParams
from .handles import (
    AsyncWaker,
    RequestCancelled,
    RequestFailed,
    RequestHandle,
    iterate_async,
)

# RequestCancelled and RequestFailed are what a handle's result raises: importable from here too.
__all__ = ["Engine", "EngineClosed", "EngineOverloaded", "RequestCancelled", "RequestFailed", "RequestHandle",
           "iterate_async"]

DEFAULT_MAX_QUEUED = 256


class EngineOverloaded(AigcError):
    """The queue of waiting requests is full: retry later (HTTP 429)."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class EngineClosed(AigcError):
    """The engine is closing or closed: it admits nothing new."""


class Engine:
    def __init__(self, generator: TextGenerator, max_queued: int = DEFAULT_MAX_QUEUED):
        """Serve `generator` from a background thread (started here). max_queued: how many
        requests may wait for a place in the batch; past it submit raises EngineOverloaded."""
        if isinstance(max_queued, bool) or not isinstance(max_queued, int) or max_queued < 1:
            raise AigcError(f"max_queued: expected an integer >= 1, got {max_queued!r}")
        self.generator = generator
        self.max_queued = max_queued
        self._scheduler = generator.scheduler
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: list[RequestHandle] = []
        self._cancels: list[RequestHandle] = []
        self._calls: list[tuple[Callable[[], object], Future]] = []  # run by the thread between steps
        self._finish_listeners: list[Callable[[RequestHandle], None]] = []
        self._handles: dict[int, RequestHandle] = {}  # id(request) → handle, owned by the thread
        self._closing = False
        self._cancel_on_close = False
        self._owns_generator = False
        self._thread = threading.Thread(target=self._loop, name="aigc-engine", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, name_or_path: str, max_queued: int = DEFAULT_MAX_QUEUED, **options) -> "Engine":
        """TextGenerator.load(name_or_path, **options) served by a new Engine."""
        engine = cls(TextGenerator.load(name_or_path, **options), max_queued)
        engine._owns_generator = True
        return engine

    def __repr__(self) -> str:
        return f"Engine({self.generator!r}, max_queued={self.max_queued})"

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Submitting ---------------------------------------------------------------------

    def submit(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> RequestHandle:
        """Queue one prompt (a string or token ids). A bad prompt or parameter raises
        AigcError here; a full queue EngineOverloaded; a closed engine EngineClosed."""
        return self.submit_many([prompt], [params or SamplingParams()])[0]

    def submit_many(self, prompts: Sequence[str | Sequence[int]],
                    params: Sequence[SamplingParams]) -> list[RequestHandle]:
        """Queue several prompts all or none: each is checked, then all are queued together."""
        if self._closing:
            raise EngineClosed("the engine is closed: it admits no new requests")
        self.check_room(len(prompts))  # before tokenising them
        requests = self.generator._requests(list(prompts), list(params))
        for request in requests:
            if request.completion.error is not None:
                raise AigcError(request.completion.error)
            self._check_fits(request)
        handles = [RequestHandle(r, self._cancel) for r in requests]
        with self._lock:
            if self._closing:
                raise EngineClosed("the engine is closed: it admits no new requests")
            self.check_room(len(handles))
            self._inbox += handles
            self._wake.notify()
        return handles

    def check_room(self, count: int, what: str = "") -> None:
        """Whether `count` more requests may queue now: AigcError if they never can (more than
        max_queued: retrying cannot help), EngineOverloaded if not yet. `what` names them."""
        what = f"{what} = {count} requests" if what else f"{count} requests"
        if count > self.max_queued:
            raise AigcError(f"{what}: more than max_queued={self.max_queued} can never queue "
                            f"at once; send at most {self.max_queued} per call")
        queued = self.queued
        if queued + count > self.max_queued:
            raise EngineOverloaded(f"overloaded: {queued} requests are waiting and {count} more do not fit "
                                   f"(max_queued={self.max_queued}); retry later")

    async def agenerate(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> Completion:
        """The Completion, awaited without blocking the event loop; cancelling the awaiting
        task cancels the request."""
        handle = self.submit(prompt, params)
        wake = AsyncWaker(asyncio.get_running_loop())
        handle._listen(wake)
        try:
            while True:
                wake.wake_on = "done"
                if handle.done:
                    break
                await wake.wait()
        finally:
            handle.cancel()  # no effect once done
        return handle.result()

    async def astream(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> AsyncIterator[str]:
        """Text pieces as they are produced; a bad prompt raises at the first iteration.
        Leaving the loop early (break, a dropped client) cancels the request."""
        handle = self.submit(prompt, params)
        async for pieces in iterate_async([handle]):
            for piece in pieces:
                if piece.text:
                    yield piece.text

    def call(self, function: Callable[[], object]) -> Future:
        """Run `function()` on the engine thread between two steps (so it may use the model,
        which runs one step at a time); its result or exception comes in the Future."""
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise EngineClosed("the engine is closed: it admits no new requests")
            self._calls.append((function, future))
            self._wake.notify()
        return future

    def add_finish_listener(self, callback: Callable[[RequestHandle], None]) -> None:
        """Call `callback(handle)` on the engine thread as each request finishes successfully
        (not when it fails or is cancelled); it must be quick and must not raise."""
        self._finish_listeners.append(callback)

    # State --------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Requests waiting for a place in the batch (approximate while the thread runs)."""
        waiting = len(self._scheduler.waiting) if self._scheduler is not None else 0  # 0: closed
        return len(self._inbox) + waiting

    def stats(self) -> dict:
        stats = {"queued": self.queued, "max_queued": self.max_queued, "closing": self._closing,
                 "backend": self.generator.backend}
        if self._scheduler is not None:
            stats.update(self._scheduler.stats())
        return stats

    # Shutting down ------------------------------------------------------------------

    def close(self, cancel: bool = False, timeout: float | None = None) -> None:
        """Stop admitting; finish what was submitted (cancel=False) or cancel it
        (cancel=True); join the thread and drop the model. TimeoutError if the thread is
        still finishing after `timeout` seconds (call close again to keep waiting). A generator the engine loaded
        itself is released; one passed in stays usable."""
        with self._lock:
            self._closing = True
            self._cancel_on_close = self._cancel_on_close or cancel
            self._wake.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the engine is still finishing its requests after {timeout} s")
        if self._owns_generator:
            # the model (the native decoder and its KV cache) goes with its last reference
            self.generator._model = self.generator.scheduler = None
        self._scheduler = None

    # The engine thread --------------------------------------------------------------

    def _cancel(self, handle: RequestHandle) -> None:
        with self._lock:
            self._cancels.append(handle)
            self._wake.notify()

    def _check_fits(self, request: Request) -> None:
        problem = self._scheduler.check(request)
        if problem is not None:
            raise AigcError(problem)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._inbox or self._cancels or self._calls or self._closing or self._has_work()):
                    self._wake.wait()
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, []
                calls, self._calls = self._calls, []
                closing, cancel_all = self._closing, self._cancel_on_close
            _run_calls(calls)
            self._admit(inbox)
            if cancel_all:
                cancels += list(self._handles.values())
            self._apply_cancels(cancels, "cancelled: the engine closed" if cancel_all else "cancelled")
            if not self._has_work():
                if closing:
                    with self._lock:
                        if not (self._inbox or self._calls):
                            return
                continue
            self._step()

    def _has_work(self) -> bool:
        return bool(self._handles)

    def _admit(self, handles: list[RequestHandle]) -> None:
        for handle in handles:
            self._handles[id(handle.request)] = handle
            self._scheduler.add(handle.request)
        self._publish(handles)

    def _apply_cancels(self, handles: list[RequestHandle], message: str) -> list[RequestHandle]:
        """Cancel each handle's request; returns those not admitted yet (to apply later)."""
        deferred = []
        for handle in handles:
            if self._handles.pop(id(handle.request), None) is None:
                if not handle.done:
                    deferred.append(handle)  # still in the inbox
                continue
            self._scheduler.cancel(handle.request)
            handle._finish("cancelled", message)
        return deferred

    def _step(self) -> None:
        """One step of the batch. If it raises, the scheduler has failed the requests it ran
        (never the thread, never the others); they are published as failed."""
        try:
            self._scheduler.step()
        except Exception:  # noqa: BLE001 — one bad step must not take the engine down
            pass
        finally:
            self._publish(list(self._handles.values()))

    def _publish(self, handles: list[RequestHandle]) -> None:
        """Hand new text to the handles; finish those whose request ended."""
        for handle in handles:
            request = handle.request
            if handle.first_token_at is None and request.generated:
                handle.first_token_at = time.monotonic()
            piece = request.take_stream_text()
            if piece:
                handle._push(piece)
            if request.finished and self._handles.pop(id(request), None) is not None:
                if request.completion.finish_reason == "error":
                    handle._finish("failed", request.completion.error or "failed")
                else:
                    handle._finish("finished")
                    for callback in self._finish_listeners:
                        callback(handle)


def _run_calls(calls: list[tuple[Callable[[], object], Future]]) -> None:
    for function, future in calls:
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(function())
        except Exception as error:  # noqa: BLE001 — the caller gets it through the Future
            future.set_exception(error)
