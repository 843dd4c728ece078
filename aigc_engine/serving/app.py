"""`aigc serve`: an OpenAI-compatible HTTP server on Starlette + uvicorn.

POST /v1/completions and /v1/chat/completions (streamed as server-sent events with
stream=true), GET /v1/models and /v1/models/{id}, POST /v1/images/generations (PNG,
base64), POST /tokenize and /detokenize (vLLM's shapes), GET /metrics (Prometheus), GET
/health. Each text model is one Engine, so requests from every client share its
continuous batch. Bad requests get a 4xx with an OpenAI-style body {"error": {"message",
"type", "param", "code"}}; a full queue gets 429 with Retry-After; a client that leaves
cancels its requests (KV blocks freed).
Optional: an API key (auth.py) and CORS for the origins allowed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import NamedTuple

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import AigcError, respell
from ..images.generator import ImageGenerator
from ..images.png import encode_png
from ..text.prompt_logprobs import prompt_logprobs
from ..text.sampling import Completion
from . import chat
from .auth import ApiKeyMiddleware
from .engine import Engine, EngineClosed, EngineOverloaded
from .handles import RequestCancelled, RequestFailed, iterate_async
from .metrics import Metrics, RequestCounter
from .params import choices_per_prompt, completion_params, image_params, prompts_of
from .tokenization import detokenize, tokenize
from .wire import (
    HEADER_TIMEOUT_SECONDS,
    MAX_HEADER_BYTES,
    BodyError,
    SafeJSONResponse,
    parse_json,
)

MAX_BODY_BYTES = 1 << 20
# The whole body within this many seconds of the end of the headers (1 MiB at 35 KB/s), else 408.
BODY_TIMEOUT_SECONDS = 30.0
KEEP_ALIVE_SECONDS = 5  # an idle kept-alive connection closes after this (uvicorn's default)
# SIGTERM/SIGINT: requests still running after this many seconds are cancelled (JSON 503; a stream
# gets an error event, then its end), then uvicorn gets a little longer to send those answers.
GRACEFUL_SHUTDOWN_SECONDS = 10.0
RETRY_AFTER_SECONDS = 1
# A stream sends its first text at once, then its new text on the loop's ticks at least one
# interval apart (and its end at once): 10-20 events/s read as smooth, and 64 concurrent
# streams of a fast model no longer cost an event (JSON, a socket write, the client's
# parsing) per token. pycode-gpt, 64 streams, medians of 5 runs: 0.75x the in-process rate
# at 0.02, 0.78-0.82x at 0.05.
STREAM_INTERVAL_SECONDS = 0.05


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> Response:
        return SafeJSONResponse(self.body(), self.status, headers=self.headers)


# The field a message starts with: 'temperature: ...', 'logit_bias[5]: ...', 'logit_bias token id: ...'.
_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\]| token id)?:")


# The Python API's names of settings as a request body writes them.
HTTP_SPELLINGS = {"max_new_tokens": "max_tokens", "truncate_prompt=True": '"truncate_prompt": true'}


def bad_request(error: AigcError) -> ApiError:
    """SamplingParams and the tokenizer name the field first: 'temperature: expected ...'."""
    message = respell(str(error), HTTP_SPELLINGS)
    field = _FIELD.match(message)
    param = getattr(error, "param", field.group(1) if field else None)  # a chat message's path: messages[1].role
    code = "context_length_exceeded" if "context" in message or "KV-cache" in message else None
    return ApiError(400, message, param, code)


def overloaded(error: EngineOverloaded | EngineClosed, status: int = 429) -> ApiError:
    return ApiError(status, str(error), None, "overloaded" if status == 429 else "shutting_down",
                    "server_overloaded" if status == 429 else "server_error",
                    {"Retry-After": str(RETRY_AFTER_SECONDS)})


class Server:
    """The routes over the loaded models: text ones served by Engines, image ones by
    ImageGenerators (run in worker threads, at most max_image_jobs queued or running)."""

    def __init__(self, text: dict[str, Engine], images: dict[str, ImageGenerator],
                 max_body_bytes: int = MAX_BODY_BYTES, max_image_jobs: int = 8,
                 stream_interval: float = STREAM_INTERVAL_SECONDS, body_timeout: float = BODY_TIMEOUT_SECONDS,
                 header_timeout: float = HEADER_TIMEOUT_SECONDS, max_header_bytes: int = MAX_HEADER_BYTES,
                 graceful_shutdown: float = GRACEFUL_SHUTDOWN_SECONDS, api_key: str | None = None,
                 allowed_origins: list[str] | None = None):
        """api_key: wanted as 'Authorization: Bearer KEY' on every route but /health and
        /metrics; allowed_origins: browser origins CORS lets in ("*": any), none by default."""
        self.text, self.images = text, images
        self.stream_interval = stream_interval
        self.max_body_bytes = max_body_bytes
        self.body_timeout, self.header_timeout, self.max_header_bytes = body_timeout, header_timeout, max_header_bytes
        self.graceful_shutdown = graceful_shutdown
        self.max_image_jobs = max_image_jobs
        self._image_jobs = 0
        self.created = int(time.time())
        self.metrics = Metrics(text)
        self.api_key = api_key
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/images/generations", self.image_generations, methods=["POST"]),
            Route("/tokenize", partial(self.tokens, tokenize), methods=["POST"]),
            Route("/detokenize", partial(self.tokens, detokenize), methods=["POST"]),
        ]
        # Outermost first: CORS answers preflights (which carry no key), then every answer is
        # counted, 401s included.
        middleware = [Middleware(RequestCounter, metrics=self.metrics, routes=routes)]
        if allowed_origins:
            middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(allowed_origins),
                                            allow_methods=["GET", "POST"], allow_headers=["*"]))
        if api_key is not None:
            middleware.append(Middleware(ApiKeyMiddleware, api_key=api_key))
        self.app = Starlette(routes=routes, middleware=middleware, exception_handlers={
            404: self._not_found, 405: self._not_allowed, Exception: self._internal_error})

    # Plumbing -----------------------------------------------------------------------

    async def _not_found(self, request: Request, exc) -> Response:
        return ApiError(404, f"no route {request.method} {request.url.path}", code="not_found").response()

    async def _not_allowed(self, request: Request, exc) -> Response:
        return ApiError(405, f"method {request.method} is not allowed on {request.url.path}",
                        code="method_not_allowed").response()

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        """A bug's answer is still OpenAI's JSON (uvicorn logs the traceback)."""
        return ApiError(500, f"internal error: {type(exc).__name__}", kind="server_error",
                        code="internal_error").response()

    async def _json(self, request: Request) -> dict:
        """The body as a JSON object, refused past max_body_bytes without reading it all."""
        limit = self.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes",
                           code="body_too_large")
        chunks, size = [], 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
                chunks.append(chunk)
        try:
            await asyncio.wait_for(read(), self.body_timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {self.body_timeout:g} s ({size} bytes "
                           "came)", code="body_timeout", headers={"Connection": "close"}) from None
        try:
            body = parse_json(b"".join(chunks))
        except BodyError as error:
            raise ApiError(400, str(error), code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}",
                           code="invalid_json")
        return body

    def _model(self, body: dict, models: dict, kind: str):
        name = body.get("model")
        if not isinstance(name, str):
            raise ApiError(400, f"model: expected the name of a loaded {kind} model, got {name!r}", "model")
        if name not in models and (name in self.text or name in self.images):
            route = "POST /v1/completions" if name in self.text else "POST /v1/images/generations"
            raise ApiError(400, f"model '{name}' is not a {kind} model: send its requests to {route}", "model",
                           "wrong_model_kind")
        if name not in models:
            others = ", ".join(sorted(models)) or "none loaded"
            raise ApiError(404, f"model '{name}' is not a {kind} model this server serves ({others})", "model",
                           "model_not_found")
        return models[name]

    def cancel_all(self) -> None:
        """Cancel every text request, without waiting: each handler answers its client (503)."""
        for engine in self.text.values():
            try:
                engine.close(cancel=True, timeout=0)
            except TimeoutError:  # the engine thread is cancelling them now
                pass

    # Routes -------------------------------------------------------------------------

    def health_report(self) -> dict:
        """What /health says: each text model's engine stats, each image model's family."""
        return {"status": "ok", "models": {name: engine.stats() for name, engine in self.text.items()}
                | {name: {"family": g.family} for name, g in self.images.items()}}

    async def health(self, request: Request) -> Response:
        return JSONResponse(self.health_report())

    def _model_object(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "aigc-engine"}

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_object(name)
                                                        for name in sorted(self.text) + sorted(self.images)]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model_id"]
        if name not in self.text and name not in self.images:
            others = ", ".join(sorted(self.text) + sorted(self.images)) or "none loaded"
            return ApiError(404, f"model '{name}' is not served here ({others})", "model",
                            "model_not_found").response()
        return JSONResponse(self._model_object(name))

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def tokens(self, handle, request: Request) -> Response:
        """/tokenize and /detokenize: `model` may be left out when one text model is served."""
        try:
            body = await self._json(request)
            if "model" not in body and len(self.text) == 1:
                body = body | {"model": next(iter(self.text))}
            engine = self._model(body, self.text, "text")
            return SafeJSONResponse(await asyncio.to_thread(handle, body, engine.generator))
        except ApiError as error:
            return error.response()
        except AigcError as error:
            return bad_request(error).response()

    async def completions(self, request: Request) -> Response:
        try:
            body = await self._json(request)
            name = body.get("model")
            engine = self._model(body, self.text, "text")
            prompts = prompts_of(body.get("prompt"))
            # Before any tokenising: 150,000 prompts × n=16 once took 90 s of the event loop.
            n = choices_per_prompt(body)
            engine.check_room(len(prompts) * n, f"prompt: {len(prompts)} prompts × n={n}")
            jobs, options = completion_params(body, len(prompts))
            # Tokenising in a worker thread: the event loop (other clients, /health) carries on.
            handles = await asyncio.to_thread(engine.submit_many, [prompts[i] for i, _ in jobs],
                                              [p for _, p in jobs])
        except (ApiError, AigcError) as error:
            return _refusal(error)
        meta = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
                "model": name}
        echoes = [(prompts[i] if isinstance(prompts[i], str) else h.completion.prompt) if options["echo"] else ""
                  for (i, _), h in zip(jobs, handles)]

        prompt_entries = [[] for _ in handles]
        if options["echo"] and options["logprobs"] is not None:
            try:
                prompt_entries = await _prompt_logprobs(engine, jobs, handles, options["logprobs"])
            except BaseException as error:
                for handle in handles:
                    handle.cancel()
                if isinstance(error, EngineClosed):
                    return overloaded(error, 503).response()
                raise

        def chunk(index: int, text: str, entries: list | None, finish_reason: str | None) -> dict:
            return {"text": text, "index": index, "logprobs": None if entries is None else _logprobs(entries, 0),
                    "finish_reason": finish_reason}
        echo_logprobs = [_logprobs(entries, 0) if options["logprobs"] is not None else None
                         for entries in prompt_entries]
        shape = _Shape([{"text": echo, "index": i, "logprobs": echo_logprobs[i], "finish_reason": None}
                        for i, echo in enumerate(echoes) if echo], chunk,
                       lambda i, c: _choice(i, c, echoes[i], prompt_entries[i], options["logprobs"]),
                       "text_completion")
        return await self._answer(request, handles, meta, options, shape)

    async def chat_completions(self, request: Request) -> Response:
        try:
            body = await self._json(request)
            name = body.get("model")
            engine = self._model(body, self.text, "text")
            n = choices_per_prompt(body)
            engine.check_room(n, f"n={n}")
            # Rendering and tokenising in a worker thread, as for completions.
            ids, jobs, options = await asyncio.to_thread(chat.chat_request, body, engine.generator)
            handles = await asyncio.to_thread(engine.submit_many, [ids] * len(jobs), [p for _, p in jobs])
        except (ApiError, AigcError) as error:
            return _refusal(error)
        meta = {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
                "model": name}
        token_bytes = engine.generator.tokenizer.token_bytes
        shape = _Shape([chat.opening_choice(i) for i in range(len(handles))],
                       lambda *choice: chat.chunk_choice(*choice, token_bytes),
                       lambda i, c: chat.message_choice(i, c, options["logprobs"], token_bytes),
                       "chat.completion.chunk")
        return await self._answer(request, handles, meta, options, shape)

    async def _answer(self, request: Request, handles, meta: dict, options: dict, shape: _Shape) -> Response:
        """The submitted requests' answer: a stream of events, or one JSON body once all are done."""
        if options["stream"]:
            return StreamingResponse(self._stream(handles, meta | {"object": shape.chunk_object}, options, shape),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            await _until_done_or_disconnect(request, handles)
            completions = [h.result() for h in handles]
        except _ClientGone:
            return Response(status_code=499)
        except RequestFailed as error:
            return ApiError(500, str(error), kind="server_error", code="generation_failed").response()
        except RequestCancelled as error:
            return _cancelled(error).response()
        choices = [shape.choice(i, c) for i, c in enumerate(completions)]
        return JSONResponse(meta | {"choices": choices, "usage": _usage(options["jobs"], completions)})

    async def _stream(self, handles, meta: dict, options: dict, shape: _Shape) -> AsyncIterator[str]:
        sent_logprobs = [0] * len(handles)
        for choice in shape.opening:
            yield _event(meta | {"choices": [choice]})
        try:
            async for pieces in iterate_async(handles, self.stream_interval):
                merged: dict[int, list] = {}  # one choice per index and event: text joined, last count
                for piece in pieces:
                    text, _, _ = merged.get(piece.index, ("", 0, False))
                    merged[piece.index] = (text + piece.text, piece.tokens, piece.done)
                choices = []
                for index, (text, tokens, done) in merged.items():
                    completion = handles[index].completion
                    entries = None
                    if options["logprobs"] is not None:
                        start, sent_logprobs[index] = sent_logprobs[index], tokens
                        entries = completion.logprobs[start:tokens]
                    if text or done or entries:
                        choices.append(shape.chunk(index, text, entries, completion.finish_reason if done else None))
                if choices:
                    yield _event(meta | {"choices": choices})
        except RequestFailed as error:
            yield _event(ApiError(500, str(error), kind="server_error", code="generation_failed").body())
            yield "data: [DONE]\n\n"
            return
        except RequestCancelled as error:
            yield _event(_cancelled(error).body())
            yield "data: [DONE]\n\n"
            return
        if options["include_usage"]:
            jobs = options["jobs"]
            yield _event(meta | {"choices": [], "usage": _usage(jobs, [h.completion for h in handles])})
        yield "data: [DONE]\n\n"

    async def image_generations(self, request: Request) -> Response:
        try:
            body = await self._json(request)
            generator = self._model(body, self.images, "image")
            n, seed, truncation = image_params(body, generator)
        except ApiError as error:
            return error.response()
        except AigcError as error:
            return bad_request(error).response()
        if self._image_jobs >= self.max_image_jobs:
            return ApiError(429, f"overloaded: {self._image_jobs} image requests are running or waiting; retry later",
                            code="overloaded", kind="server_overloaded",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)}).response()
        self._image_jobs += 1
        try:
            pngs = await asyncio.to_thread(_sample_pngs, generator, n, seed, truncation)
        except AigcError as error:
            return bad_request(error).response()
        finally:
            self._image_jobs -= 1
        return JSONResponse({"created": int(time.time()), "seed": seed,
                             "data": [{"b64_json": base64.b64encode(png).decode("ascii")} for png in pngs]})


class _Shape(NamedTuple):
    """How a text route words its answer (completions and chat differ only here)."""
    opening: list[dict]  # choices streamed before any text, one event each (echoes; the chat's roles)
    chunk: Callable[[int, str, list | None, str | None], dict]  # (index, text, logprob entries, finish) → choice
    choice: Callable[[int, Completion], dict]  # a choice of the whole answer
    chunk_object: str  # the streamed events' "object"


class _ClientGone(Exception):
    pass


def _refusal(error: Exception) -> Response:
    """A request refused before it ran: its own ApiError, 429 or 503 from the engine, or 400."""
    if isinstance(error, ApiError):
        return error.response()
    if isinstance(error, EngineOverloaded):
        return overloaded(error).response()
    if isinstance(error, EngineClosed):
        return overloaded(error, 503).response()
    return bad_request(error).response()


def _cancelled(error: RequestCancelled) -> ApiError:
    """A request cut short while its client waits: the server is shutting down (a client
    that leaves gets no answer)."""
    return ApiError(503, f"{error}: the server is shutting down", kind="server_error", code="shutting_down",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _until_done_or_disconnect(request: Request, handles) -> None:
    """Wait for the handles; if the client disconnects first, cancel them (their KV
    blocks are freed) and raise _ClientGone."""
    async def drain() -> None:
        async for _ in iterate_async(handles):
            pass

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    work, watch = asyncio.ensure_future(drain()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()  # its iterate_async cancels the requests
    if not work.done() or work.cancelled():
        raise _ClientGone()
    work.result()


def _sample_pngs(generator: ImageGenerator, n: int, seed: int, truncation: float | None) -> list[bytes]:
    return [encode_png(image) for image in generator.sample(n, seed, truncation)]


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _prompt_logprobs(engine: Engine, jobs: list, handles: list, top_n: int) -> list[list]:
    """Each choice's prompt-token entries (echo with logprobs), computed once per prompt on
    the engine's thread (between steps: the native model runs one step at a time)."""
    generator, by_prompt = engine.generator, {}
    for (i, _), handle in zip(jobs, handles):
        if i not in by_prompt:
            call = partial(prompt_logprobs, generator._model, generator.tokenizer, handle.request.prompt_ids, top_n)
            # the prompt's own tokens: those of the file's prompt prefix are not echoed
            by_prompt[i] = (await asyncio.wrap_future(engine.call(call)))[handle.request.prefix_tokens:]
    return [by_prompt[i] for i, _ in jobs]


def _logprobs(entries, offset: int) -> dict:
    """OpenAI's completions logprobs: tokens, token_logprobs, top_logprobs, text_offset (a
    prompt's first token, echoed, has null for its logprob and its top)."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return {"tokens": [e.text for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [None if e.top is None else {text: lp for _, text, lp in e.top} for e in entries],
            "text_offset": offsets}


def _choice(index: int, completion: Completion, echo: str, prompt_entries: list, logprobs: int | None) -> dict:
    if logprobs is not None and prompt_entries:
        echo_logprobs = _logprobs(prompt_entries, 0)
        offset = sum(len(e.text) for e in prompt_entries)
        tail = _logprobs(completion.logprobs, offset)
        merged = {key: echo_logprobs[key] + tail[key] for key in tail}
    else:
        merged = _logprobs(completion.logprobs, len(echo)) if logprobs is not None else None
    return {"text": echo + completion.text, "index": index, "logprobs": merged,
            "finish_reason": completion.finish_reason}


def _usage(jobs: list, completions: list[Completion]) -> dict:
    prompt_tokens = sum({i: c.prompt_tokens for (i, _), c in zip(jobs, completions)}.values())
    completion_tokens = sum(len(c.token_ids) for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
