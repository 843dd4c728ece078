"""Beyond one process: 2 Ray Serve replicas (1 thread each) against one `aigc serve` (2
threads) and the in-process TextGenerator.generate, and `aigc batch` in-process against
`aigc batch --ray` (2 actors of 1 thread).

Serving: benchmarks/serve.py's workload and lean streaming clients (1, 16, 64 clients, each
sending its requests one after another; 16 prompt tokens, a fixed count of new tokens, own
seeds), against `aigc serve MODEL` and `aigc serve MODEL --ray --replicas 2` in
subprocesses, alternating with the in-process call, rounds in turn. Reported: tokens/s,
TTFT and latency percentiles, the ratios (Ray Serve over `aigc serve`: target ≥ 0.8 at 64
clients — on this machine both share the same 2 cores), and Ray's added cost at one client:
per request (TTFT over `aigc serve`'s) and per streamed event (the rest of the latency it
adds, over the events of a request). Batch: the same requests as an OpenAI batch file,
tokens/s as `aigc batch` reports it (from the models loaded to the last line written), and
its ratio (target ≥ 0.9). Every request must complete, or the run fails.

    python benchmarks/scale.py [--quick] [--json results.json] [--cache DIR] [--model M]
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import Records, machine, parser
from serve import MAX_BATCH, PROMPT_TOKENS, bench_model, in_process, load_test, percentile, run_async, start_server
from serve import workload as serve_workload

from aigc_engine import TextGenerator

THREADS = 2  # the machine's share: one server of 2 threads, or 2 replicas / actors of 1
START_SECONDS = 180  # Ray, its Serve controller and proxy, two replicas: bounded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray_serve(path: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    """`aigc serve MODEL --ray --replicas 2` on its own local Ray instance, 1 thread a replica."""
    port = free_port()
    env = dict(os.environ, AIGC_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "aigc_engine.cli", "serve", path, "--ray", "--replicas", "2",
                                "--port", str(port), "--max-batch-size", str(MAX_BATCH), "--max-queued", "1024"],
                               stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    deadline, seen = time.monotonic() + START_SECONDS, []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if line.startswith("aigc serve: http://"):
            threading.Thread(target=process.stderr.read, daemon=True).start()  # Ray logs on: keep the pipe empty
            return process, line.split()[2]
        if not line and process.poll() is not None:
            break
    stop(process)
    raise RuntimeError("aigc serve --ray did not start:\n" + "".join(seen[-20:]))


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)  # --ray: deletes its application, stops its Ray instance
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def added_cost(ray_results: list[dict], serve_results: list[dict]) -> tuple[float, float]:
    """Ray's extra seconds per request (TTFT) and per streamed event (the rest of the
    latency it adds, over the events of a request), medians at one client."""
    def median(results, key):
        return statistics.median(r[key] for r in results)
    per_request = median(ray_results, "ttft") - median(serve_results, "ttft")
    rest = (median(ray_results, "latency") - median(ray_results, "ttft")) - \
        (median(serve_results, "latency") - median(serve_results, "ttft"))
    return per_request, rest / max(median(ray_results, "events"), 1)


def serving(records: Records, generator: TextGenerator, path: str, model: str, cache: Path, clients_list,
            per_client: int, new_tokens: int, rounds: int) -> None:
    single, single_url = start_server(path, THREADS, cache)
    try:
        replicas, ray_url = start_ray_serve(path, cache)
    except BaseException:
        stop(single)
        raise
    systems = {"aigc serve (2 threads)": single_url, "Ray Serve (2 replicas x 1 thread)": ray_url}
    header = (f"{'clients':>7} {'system':<34} {'tok/s':>8} {'vs in-proc':>10} {'TTFT p50':>9} {'TTFT p99':>9} "
              f"{'lat p50':>8} {'lat p99':>8}")
    try:
        for base in systems.values():  # warm-up: connections, both replicas' first steps
            run_async(load_test(base, model, serve_workload(generator, 4, 1, 4), 4))
        print(header)
        print("-" * len(header))
        for clients in clients_list:
            jobs = serve_workload(generator, clients, per_client, new_tokens)
            total = len(jobs) * new_tokens
            runs = {name: [] for name in systems}
            local = []
            for _ in range(rounds):  # the systems take turns, so a slow spell hits all of them
                for name, base in systems.items():
                    runs[name].append(run_async(load_test(base, model, jobs, clients)))
                local.append(in_process(generator, jobs))
            local_rate = total / statistics.median(local)
            params = {"clients": clients, "requests": len(jobs), "prompt": PROMPT_TOKENS, "new_tokens": new_tokens}
            records.add("scale", "TextGenerator.generate (in-process, 2 threads)", params, local_rate, "tokens/s")
            print(f"{clients:>7} {'in-process (2 threads)':<34} {local_rate:>8.0f} {1:>10.2f}")
            rates, medians = {}, {}
            for name, measured in runs.items():
                failures = [r["error"] for _, results in measured for r in results if "error" in r]
                if failures or any(len(results) != len(jobs) for _, results in measured):
                    raise SystemExit(f"{name}: {len(failures)} requests failed: {failures[:3]}")
                seconds, results = sorted(measured, key=lambda run: run[0])[len(measured) // 2]  # median round
                rates[name], medians[name] = total / seconds, results
                ttft, latency = [r["ttft"] for r in results], [r["latency"] for r in results]
                figures = [("tokens/s", rates[name]), ("ttft p50 s", percentile(ttft, 50)),
                           ("ttft p99 s", percentile(ttft, 99)), ("latency p50 s", percentile(latency, 50)),
                           ("latency p99 s", percentile(latency, 99))]
                for unit, value in figures:
                    records.add("scale", name, params, value, unit)
                print(f"{clients:>7} {name:<34} {rates[name]:>8.0f} {rates[name] / local_rate:>10.2f} "
                      f"{percentile(ttft, 50) * 1e3:>7.0f}ms {percentile(ttft, 99) * 1e3:>7.0f}ms "
                      f"{percentile(latency, 50):>7.2f}s {percentile(latency, 99):>7.2f}s", flush=True)
            ray_name, serve_name = list(systems)[1], list(systems)[0]
            ratio = rates[ray_name] / rates[serve_name]
            records.add("scale", "Ray Serve / aigc serve", params, ratio, "ratio")
            line = f"{clients:>7} Ray Serve / aigc serve: {ratio:.2f}x tokens/s"
            if clients == 1:
                per_request, per_event = added_cost(medians[ray_name], medians[serve_name])
                records.add("scale", "Ray Serve added cost", params, per_request, "seconds per request")
                records.add("scale", "Ray Serve added cost", params, per_event, "seconds per event")
                line += f"; Ray adds {per_request * 1e3:.2f} ms a request, {per_event * 1e6:.0f} µs an event"
            print(line, flush=True)
    finally:
        stop(replicas)
        single.terminate()
        single.wait(30)


def batch_rate(command: list[str], threads: int, cwd: Path) -> float:
    """tokens/s of an `aigc batch` run, as its last progress line reports it."""
    env = dict(os.environ, AIGC_NUM_THREADS=str(threads))
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    rates = re.findall(r"(\d+)/(\d+) lines, ([\d.]+) tokens/s", run.stderr)
    if run.returncode != 0 or not rates or rates[-1][0] != rates[-1][1]:
        raise SystemExit(f"{' '.join(command[3:])} failed:\n{run.stderr[-2000:]}")
    return float(rates[-1][2])


def batching(records: Records, generator: TextGenerator, path: str, cache: Path, lines: int, new_tokens: int,
             rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="scale-batch-", dir=cache))
    source = folder / "in.jsonl"
    with source.open("w") as f:
        for i, (prompt, fields) in enumerate(serve_workload(generator, lines, 1, new_tokens)):
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
                                "body": {"prompt": prompt, **fields}}) + "\n")
    common = [sys.executable, "-m", "aigc_engine.cli", "batch", str(source), "--model", path,
              "--max-batch-size", str(MAX_BATCH), "--concurrency", str(MAX_BATCH)]
    measured = {"aigc batch (in-process, 2 threads)": [], "aigc batch --ray (2 actors x 1 thread)": []}
    for r in range(rounds):
        out = [str(folder / f"out-{r}-{k}.jsonl") for k in range(2)]
        measured["aigc batch (in-process, 2 threads)"].append(
            batch_rate(common[:5] + [out[0]] + common[5:], THREADS, folder))
        measured["aigc batch --ray (2 actors x 1 thread)"].append(
            batch_rate(common[:5] + [out[1]] + common[5:] + ["--ray", "--replicas", "2"], 1, folder))
    params = {"lines": lines, "prompt": PROMPT_TOKENS, "new_tokens": new_tokens}
    rates = {name: statistics.median(values) for name, values in measured.items()}
    for name, rate in rates.items():
        records.add("scale", name, params, rate, "tokens/s")
        print(f"{name:<40} {rate:>8.0f} tok/s")
    in_proc, on_ray = rates.values()
    records.add("scale", "aigc batch --ray / in-process", params, on_ray / in_proc, "ratio")
    print(f"batch --ray / in-process: {on_ray / in_proc:.2f}x")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aigc-bench"),
                   help="where the stand-in model lives between runs")
    p.add_argument("--model", help="a GPT's name or .onnx path instead of pycode-gpt")
    args = p.parse_args()
    os.environ["AIGC_NUM_THREADS"] = str(THREADS)
    try:
        import httptools  # noqa: F401
        import ray  # noqa: F401
    except ImportError as error:
        print(f"{error.name} is not installed (pip install '.[serve,ray]'): skipped")
        return
    cache = Path(args.cache)
    found = bench_model(cache, args.model)
    if found is None:
        return
    path, description = found
    clients, per_client, new_tokens, rounds, lines = ((1, 16), 2, 32, 1, 64) if args.quick else \
        ((1, 16, 64), 4, 64, 3, 512)
    print(f"model: {description}; {per_client} requests per client, {PROMPT_TOKENS} prompt tokens, {new_tokens} new "
          f"tokens each; batch: {lines} lines")
    records = Records(machine(THREADS))
    generator = TextGenerator.load(path, max_batch_size=MAX_BATCH)
    serving(records, generator, path, Path(path).stem, cache, clients, per_client, new_tokens, rounds)
    batching(records, generator, path, cache, lines, new_tokens, rounds)
    records.save(args)


if __name__ == "__main__":
    sys.exit(main())
