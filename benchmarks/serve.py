"""Load test of `aigc serve` on loopback against the in-process batched TextGenerator.generate.

1, 16 and 64 concurrent clients (asyncio + httptools, in this process), each sending a fixed
number of streamed completions one after another (prompt 16 token ids, a fixed number
of new tokens: ignore_eos, temperature 0.8, top-p 0.95, its own seed) to `aigc serve`
running in a subprocess (native backend, max batch 64). Reported: requests/s, tokens/s,
p50/p99 time to first token and latency; every request must end with [DONE], all its
tokens and no error, or the run fails. The in-process baseline runs the same prompts and
params in one TextGenerator.generate call (continuous batch of up to 64); the ratio is
server over in-process (target ≥ 0.8 at 64 clients). The model: the shipped pycode-gpt
if installed, otherwise a GPT exported here with random weights (named in the output),
or the one --model names.

    python benchmarks/serve.py [--quick] [--json results.json] [--threads N] [--cache DIR] [--model M]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from common import Records, machine, parser

from aigc_engine import SamplingParams, TextGenerator
from aigc_engine.artifacts.registry import MODELS_DIR, resolve

CLIENTS = (1, 16, 64)
PROMPT_TOKENS = 16
MAX_BATCH = 64
# A mid-sized GPT for when pycode-gpt is not installed: big enough that the decoder's
# work, not Python, sets the pace at batch 64 (≈ 22 MFLOP per token).
BENCH_CONFIG = {"vocab_size": 512, "n_positions": 256, "n_embd": 384, "n_layer": 6, "n_head": 6}


def bench_model(cache: Path, model: str | None = None) -> tuple[str, str] | None:
    """(path, description): `model` (a name or .onnx path) when given; else pycode-gpt if
    shipped, else a random-weight GPT built once into cache (made if missing)."""
    cache.mkdir(parents=True, exist_ok=True)  # the callers keep their other files there too
    if model:
        return str(resolve(model)), model
    if (MODELS_DIR / "pycode-gpt.onnx").is_file():
        return str(MODELS_DIR / "pycode-gpt.onnx"), "pycode-gpt (shipped)"
    name = "gpt-{n_layer}x{n_embd}-v{vocab_size}".format(**BENCH_CONFIG)
    out = cache / f"serve-{name}.onnx"
    description = f"{name} (random weights, exported here: pycode-gpt is not installed)"
    if out.is_file():
        return str(out), description
    try:
        import torch

        import aigc_export
    except ImportError as error:
        print(f"pycode-gpt is not installed and the stand-in cannot be built ({error.name} is missing): skipped")
        return None
    print(f"building {name} into {cache} (once)...", flush=True)
    torch.manual_seed(0)
    model = aigc_export.build_model("gpt", BENCH_CONFIG).eval()
    text = Path(sysconfig.get_paths()["stdlib"], "argparse.py").read_text()
    tokenizer = aigc_export.train_tokenizer([text], BENCH_CONFIG["vocab_size"])
    aigc_export.export_text_model(model, "gpt", tokenizer.to_str(), {"dataset": "none", "steps": 0}, out)
    return str(out), description


def workload(generator: TextGenerator, clients: int, per_client: int, new_tokens: int) -> list[tuple[list[int], dict]]:
    """(prompt ids, sampling fields) per request, client-major; prompts cut from stdlib source."""
    text = Path(sysconfig.get_paths()["stdlib"], "argparse.py").read_text()
    ids = generator.tokenizer.encode(text)
    jobs = []
    for i in range(clients * per_client):
        start = (i * PROMPT_TOKENS) % (len(ids) - PROMPT_TOKENS)
        jobs.append((ids[start:start + PROMPT_TOKENS],
                     {"max_tokens": new_tokens, "temperature": 0.8, "top_p": 0.95, "seed": i, "ignore_eos": True}))
    return jobs


def in_process(generator: TextGenerator, jobs) -> float:
    """Seconds for one generate call over all the jobs."""
    params = [SamplingParams(max_new_tokens=f["max_tokens"], temperature=f["temperature"], top_p=f["top_p"],
                             seed=f["seed"], ignore_eos=True) for _, f in jobs]
    started = time.perf_counter()
    completions = generator.generate([prompt for prompt, _ in jobs], params)
    seconds = time.perf_counter() - started
    assert all(len(c.token_ids) == jobs[0][1]["max_tokens"] for c in completions), completions[0].error
    return seconds


class SseClient:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads a server-sent-event
    stream. The load generator shares the machine's cores with the server, so it must be
    cheap: httpx spent ~220 µs of CPU per event here (5-9× this client), time the server
    lost as if it were its own slowness. This one writes the request itself and leaves
    parsing the response (status, headers, chunked body) to httptools, the C parser
    uvicorn uses."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def __aenter__(self) -> "SseClient":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    async def post_events(self, path: str, body: dict) -> AsyncIterator[tuple[int, list[bytes]]]:
        """(HTTP status, the events (`data: ...` lines) complete so far) as they arrive."""
        import httptools

        payload = json.dumps(body).encode()
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.port,
                                                                  len(payload), payload))
        events: list[bytes] = []
        state = {"rest": b"", "complete": False}

        class Callbacks:
            def on_body(self, chunk: bytes) -> None:
                *whole, state["rest"] = (state["rest"] + chunk).split(b"\n\n")
                events.extend(whole)

            def on_message_complete(self) -> None:
                if state["rest"]:  # a body that is not an event stream (an error's JSON)
                    events.append(state["rest"])
                state["complete"] = True

        parser = httptools.HttpResponseParser(Callbacks())
        while not state["complete"]:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection mid-response")
            parser.feed_data(data)
            if events:
                yield parser.get_status_code(), events[:]
                events.clear()


async def one_request(client: SseClient, model: str, prompt: list[int], fields: dict) -> dict:
    body = {"model": model, "prompt": prompt, "stream": True, "stream_options": {"include_usage": True}, **fields}
    started = time.perf_counter()
    first = None
    tokens, done, finish, count = 0, False, None, 0
    async for status, events in client.post_events("/v1/completions", body):
        if status != 200:
            return {"error": f"HTTP {status}: {b''.join(events)[:200]!r}"}
        for line in events:
            if line == b"data: [DONE]":
                done = True
                continue
            count += 1
            event = json.loads(line[6:])
            if "error" in event:
                return {"error": event["error"]["message"]}
            for choice in event.get("choices", []):
                if choice["text"] and first is None:
                    first = time.perf_counter()
                finish = choice["finish_reason"] or finish
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    ended = time.perf_counter()
    if not done or finish != "length" or tokens != fields["max_tokens"]:
        return {"error": f"incomplete: done={done} finish={finish} tokens={tokens}"}
    return {"ttft": (first or ended) - started, "latency": ended - started, "tokens": tokens, "events": count}


async def load_test(base: str, model: str, jobs, clients: int) -> tuple[float, list[dict]]:
    """Seconds and per-request results: `clients` connections, each sending its share of
    the jobs one after another."""
    address = urlsplit(base)
    per_client = len(jobs) // clients

    async def run_client(c: int) -> list[dict]:
        async with SseClient(address.hostname, address.port) as client:
            return [await one_request(client, model, *jobs[c * per_client + k]) for k in range(per_client)]
    started = time.perf_counter()
    results = await asyncio.gather(*[run_client(c) for c in range(clients)])
    return time.perf_counter() - started, [r for rs in results for r in rs]


def run_async(coroutine):
    """On uvloop when installed (as the server runs), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


def start_server(path: str, threads: int, cwd: Path) -> tuple[subprocess.Popen, str]:
    """`aigc serve` in a subprocess, run from `cwd` so that a source checkout's aigc_engine
    (without its built extension) does not shadow the installed one."""
    env = dict(os.environ, AIGC_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "aigc_engine.cli", "serve", path, "--port", "0",
                                "--max-batch-size", str(MAX_BATCH), "--max-queued", "1024"],
                               stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    line = process.stderr.readline()
    if not line.startswith("aigc serve: http://"):
        process.kill()
        raise RuntimeError(f"aigc serve did not start: {line}{process.stderr.read()}")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # a full pipe would stall the server
    return process, line.split()[2]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aigc-bench"),
                   help="where the stand-in model lives between runs")
    p.add_argument("--model", help="a GPT's name or .onnx path to load-test instead of pycode-gpt")
    args = p.parse_args()
    os.environ["AIGC_NUM_THREADS"] = str(args.threads)
    try:
        import httptools  # noqa: F401
    except ImportError:
        print("httptools is not installed (pip install '.[serve]'): skipped")
        return
    cache = Path(args.cache)
    found = bench_model(cache, args.model)
    if found is None:
        return
    path, description = found
    per_client, new_tokens, rounds = (2, 32, 1) if args.quick else (4, 64, 3)
    print(f"model: {description}; {per_client} requests per client, {PROMPT_TOKENS} prompt tokens, "
          f"{new_tokens} new tokens each; {args.threads} threads")
    records = Records(machine(args.threads))
    generator = TextGenerator.load(path, max_batch_size=MAX_BATCH)
    model = Path(path).stem
    process, base = start_server(path, args.threads, cache)
    header = (f"{'clients':>7} {'requests':>8} {'req/s':>7} {'tok/s':>8} {'in-proc tok/s':>13} {'ratio':>6} "
              f"{'TTFT p50':>9} {'TTFT p99':>9} {'lat p50':>8} {'lat p99':>8} {'failed':>6}")
    try:
        run_async(load_test(base, model, workload(generator, 1, 1, 4), 1))  # warm-up
        in_process(generator, workload(generator, 1, 1, 4))
        print(header)
        print("-" * len(header))
        for clients in CLIENTS:
            jobs = workload(generator, clients, per_client, new_tokens)
            total_tokens = len(jobs) * new_tokens
            runs, local = [], []
            for _ in range(rounds):  # server and in-process alternate, so a slow spell hits both
                runs.append(run_async(load_test(base, model, jobs, clients)))
                local.append(in_process(generator, jobs))
            failures = [r["error"] for _, results in runs for r in results if "error" in r]
            lost = sum(len(jobs) - len(results) for _, results in runs)
            seconds, results = sorted(runs, key=lambda run: run[0])[len(runs) // 2]  # the median round
            ok = [r for r in results if "error" not in r]
            ttft = [r["ttft"] for r in ok] or [float("nan")]
            latency = [r["latency"] for r in ok] or [float("nan")]
            local_rate = total_tokens / statistics.median(local)
            rate = total_tokens / seconds
            params = {"model": description, "clients": clients, "requests": len(jobs), "prompt": PROMPT_TOKENS,
                      "new_tokens": new_tokens, "threads": args.threads}
            for unit, value in [("requests/s", len(jobs) / seconds), ("tokens/s", rate),
                                ("ttft p50 s", percentile(ttft, 50)), ("ttft p99 s", percentile(ttft, 99)),
                                ("latency p50 s", percentile(latency, 50)), ("latency p99 s", percentile(latency, 99)),
                                ("failed requests", len(failures) + lost)]:
                records.add("serve", "aigc serve (HTTP, streamed)", params, value, unit)
            records.add("serve", "TextGenerator.generate (in-process)", params, local_rate, "tokens/s")
            print(f"{clients:>7} {len(jobs):>8} {len(jobs) / seconds:>7.1f} {rate:>8.0f} {local_rate:>13.0f} "
                  f"{rate / local_rate:>6.2f} {percentile(ttft, 50) * 1e3:>7.0f}ms {percentile(ttft, 99) * 1e3:>7.0f}ms "
                  f"{percentile(latency, 50):>7.2f}s {percentile(latency, 99):>7.2f}s {len(failures) + lost:>6}",
                  flush=True)
            if failures or lost:
                raise SystemExit(f"{len(failures)} requests failed, {lost} lost: {failures[:3]}")
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    records.save(args)


if __name__ == "__main__":
    sys.exit(main())
