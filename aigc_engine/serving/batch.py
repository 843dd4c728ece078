"""`aigc batch INPUT.jsonl OUTPUT.jsonl`: an OpenAI batch file run in-process.

Each input line is an OpenAI batch request — {"custom_id", "method": "POST", "url", "body"}
— and goes through the server's own routes (the ASGI app `aigc serve` runs, called here
without a socket: one implementation of the routes), up to `concurrency` at a time, so the
engine batches them continuously. Each output line is OpenAI's batch output line:
{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}; a request
the route refuses keeps its status and error body there. A line that is not a request at
all (not JSON, no custom_id, another method, a stream) gets an output line with
"response": null and "error": {"code", "message"}: a bad line never aborts the job.

Lines are written as their requests end, each flushed whole, so an interrupted job keeps
what it finished; a rerun appends to the same output and skips the custom_ids already
there (a line cut off mid-write is dropped first). A custom_id must not repeat in the
input — the job refuses to start, naming both lines, as OpenAI's batch API does — so every
custom_id is in the output exactly once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ..errors import AigcError

URLS = ("/v1/completions", "/v1/chat/completions")
DEFAULT_CONCURRENCY = 64
OVERLOADED_RETRY_SECONDS = 0.05


class LineError(Exception):
    """Why an input line is not a request (the output line's error.message)."""


def parse_line(number: int, line: str) -> tuple[str | None, str, dict]:
    """(custom_id, url, body) of one input line, or LineError naming the line."""
    try:
        request = json.loads(line)
    except ValueError as error:
        raise LineError(f"line {number}: not JSON ({error})") from None
    if not isinstance(request, dict):
        raise LineError(f"line {number}: expected a JSON object, got {type(request).__name__}")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError(f"line {number}: custom_id: expected a non-empty string, got {custom_id!r}")
    if request.get("method") != "POST":
        raise LineError(f"line {number}: method: expected \"POST\", got {request.get('method')!r}")
    url = request.get("url")
    if url not in URLS:
        raise LineError(f"line {number}: url: expected one of {', '.join(URLS)}, got {url!r}")
    body = request.get("body")
    if not isinstance(body, dict):
        raise LineError(f"line {number}: body: expected a JSON object, got {type(body).__name__}")
    if body.get("stream"):
        raise LineError(f"line {number}: body.stream: a batch request cannot stream")
    return custom_id, url, body


def custom_id_of(line: str) -> str | None:
    """The custom_id of a line when it has one (for the resume and duplicate checks)."""
    try:
        request = json.loads(line)
    except ValueError:
        return None
    custom_id = request.get("custom_id") if isinstance(request, dict) else None
    return custom_id if isinstance(custom_id, str) and custom_id else None


def check_unique(lines: list[str]) -> None:
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        custom_id = custom_id_of(line)
        if custom_id is None:
            continue
        if custom_id in seen:
            raise AigcError(f"line {number}: custom_id {custom_id!r} repeats line {seen[custom_id]} "
                            "(each must be unique: the output names each once)")
        seen[custom_id] = number


def already_done(output: Path) -> set[str]:
    """The custom_ids the output holds; a last line cut off mid-write is removed."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        with output.open("r+b") as f:
            f.truncate(len(data))
    return {custom_id for line in data.decode("utf-8", "replace").splitlines()
            if (custom_id := custom_id_of(line)) is not None}


async def post(app, url: str, body: dict) -> tuple[int, dict]:
    """One POST through the ASGI app, in-process: (status, the JSON body)."""
    payload = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": url, "raw_path": url.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"batch"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(payload)).encode())],
             "client": ("127.0.0.1", 0), "server": ("batch", 0)}
    delivered = asyncio.Event()
    status, chunks = 500, []

    async def receive() -> dict:
        if not delivered.is_set():
            delivered.set()
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Event().wait()  # the caller never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, json.loads(b"".join(chunks) or b"null")


def output_line(custom_id: str | None, status: int | None = None, body: dict | None = None,
                error: str | None = None) -> str:
    response = None if status is None else {"status_code": status, "request_id": f"req_{uuid.uuid4().hex}",
                                            "body": body}
    return json.dumps({"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": response,
                       "error": None if error is None else {"code": "invalid_request", "message": error}},
                      ensure_ascii=False) + "\n"


class Progress:
    """Lines done and generated tokens per second, on stderr: one line redrawn on a
    terminal, else a line at every tenth of the job."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet = total, quiet
        self.done = self.tokens = 0
        self.started = time.monotonic()
        self._tty = sys.stderr.isatty()
        self._next_report = max(total // 10, 1)

    def add(self, tokens: int) -> None:
        self.done += 1
        self.tokens += tokens
        if self.quiet:
            return
        if self._tty:
            print(f"\r{self.line()}", end="", file=sys.stderr, flush=True)
        elif self.done >= self._next_report or self.done == self.total:
            self._next_report += max(self.total // 10, 1)
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return f"aigc batch: {self.done}/{self.total} lines, {self.tokens / seconds:.1f} tokens/s"

    def close(self) -> None:
        if not self.quiet and self._tty:
            print(file=sys.stderr, flush=True)


async def answer(app, number: int, line: str, default_model: str | None) -> tuple[str, int]:
    """One input line through the app: (its output line, the tokens it generated)."""
    try:
        custom_id, url, body = parse_line(number, line)
    except LineError as error:
        return output_line(custom_id_of(line), error=str(error)), 0
    if default_model is not None:
        body.setdefault("model", default_model)
    status, reply = await post(app, url, body)
    while status == 429:  # the engine's queue is full for now: wait for room, lose nothing
        await asyncio.sleep(OVERLOADED_RETRY_SECONDS)
        status, reply = await post(app, url, body)
    tokens = ((reply or {}).get("usage") or {}).get("completion_tokens", 0) if status == 200 else 0
    return output_line(custom_id, status, reply), tokens


async def answers(app, lines: list[tuple[int, str]], concurrency: int,
                  default_model: str | None) -> AsyncIterator[tuple[str, int]]:
    """(output line, tokens) of every (line number, line), in the order they end, at most
    `concurrency` running at once."""
    slots = asyncio.Semaphore(concurrency)

    async def one(number: int, line: str) -> tuple[str, int]:
        async with slots:
            return await answer(app, number, line, default_model)

    tasks = [asyncio.ensure_future(one(number, line)) for number, line in lines]
    try:
        for finished in asyncio.as_completed(tasks):
            yield await finished
    finally:
        for task in tasks:
            task.cancel()


async def run_batch(app, lines: list[tuple[int, str]], out, progress: Progress, concurrency: int,
                    default_model: str | None) -> None:
    """Every (line number, line) through the app, the output line written as each ends."""
    async for text, tokens in answers(app, lines, concurrency, default_model):
        out.write(text)
        out.flush()
        progress.add(tokens)


def read_todo(input_path: str, output_path: str) -> tuple[list[tuple[int, str]], int]:
    """The input's (line number, line) not yet answered in the output, and how many lines were
    already; a custom_id that repeats in the input is refused here."""
    try:
        text = Path(input_path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AigcError(f"{input_path}: cannot read ({error})") from None
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    check_unique([line for _, line in numbered])
    done = already_done(Path(output_path))
    todo = [(number, line) for number, line in numbered if custom_id_of(line) not in done]
    return todo, len(numbered) - len(todo)


def check_concurrency(concurrency) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise AigcError(f"--concurrency: expected an integer >= 1, got {concurrency!r}")


def batch(server, input_path: str, output_path: str, concurrency: int = DEFAULT_CONCURRENCY,
          quiet: bool = False) -> tuple[int, int]:
    """Run INPUT's requests through `server` (a serving.app.Server) into OUTPUT; returns
    (lines run now, lines skipped as already done). A body without "model" goes to the one
    text model when only one is loaded."""
    check_concurrency(concurrency)
    # More in flight than an engine may queue would come back as 429s, not as answers.
    concurrency = min([concurrency] + [engine.max_queued for engine in server.text.values()])
    default_model = next(iter(server.text)) if len(server.text) == 1 else None
    todo, skipped = read_todo(input_path, output_path)
    progress = Progress(len(todo), quiet)
    try:
        with Path(output_path).open("a", encoding="utf-8") as out:
            asyncio.run(run_batch(server.app, todo, out, progress, concurrency, default_model))
    finally:
        progress.close()
    return len(todo), skipped
