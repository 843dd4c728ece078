"""Each system benchmarks/text.py measures runs in a spawned process of its own, loaded once
and kept for a model's whole measurement: the parent sends (prompts, new_tokens), the worker
answers with the wall seconds of the call, timed inside it. In one process, torch slowed
CTranslate2 float32 by about a third, and the runtimes' thread pools stole cores from each
other; so only the Hugging Face worker may import torch (the others check it after loading),
and steps that need torch (conversions) run in a process of their own beforehand."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor

SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited but the environment


def in_fresh_process(fn, *args):
    """fn(*args) in a spawned process that exits after it: for steps that import torch."""
    with ProcessPoolExecutor(1, mp_context=SPAWN) as pool:
        return pool.submit(fn, *args).result()


def serve(conn, system: str, factory, args: tuple, threads: int, torch_allowed: bool) -> None:
    """The worker's loop. Replies: on load {"weight_bytes": n or None}, {"skipped": True}
    (factory returned None, having said why) or {"error": traceback}; then the seconds of
    each call, until None comes."""
    os.environ["AIGC_NUM_THREADS"] = str(threads)  # before aigc_engine is imported
    try:
        run = factory(*args)
        if run is not None and not torch_allowed and "torch" in sys.modules:
            raise AssertionError(f"{system}: loading it imported torch, which must stay out of its process")
        conn.send({"skipped": True} if run is None else {"weight_bytes": getattr(run, "weight_bytes", None)})
        while (command := conn.recv()) is not None:
            prompts, new_tokens = command
            started = time.perf_counter()
            run(prompts, new_tokens)
            conn.send(time.perf_counter() - started)
    except BaseException:
        conn.send({"error": traceback.format_exc()})


class Worker:
    def __init__(self, system: str, factory, args: tuple, threads: int, torch_allowed: bool = False):
        self.system = system
        self.conn, child = SPAWN.Pipe()
        self.process = SPAWN.Process(target=serve, args=(child, system, factory, args, threads, torch_allowed),
                                     name=system, daemon=True)
        self.process.start()
        child.close()

    def reply(self):
        try:
            answer = self.conn.recv()
        except EOFError:
            self.process.join(5)
            raise RuntimeError(f"{self.system}: its worker died (exit code {self.process.exitcode})") from None
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(f"{self.system}: its worker failed:\n{answer['error']}")
        return answer

    def seconds(self, prompts: list[list[int]], new_tokens: int) -> float:
        self.conn.send((prompts, new_tokens))
        return self.reply()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


@contextlib.contextmanager
def workers(specs: dict, threads: int):
    """{system: Worker} for specs {system: (factory, args, torch_allowed)}, loaded side by side,
    less those skipped; each worker's load reply is kept as worker.loaded. All are stopped on
    leaving."""
    started = {system: Worker(system, factory, args, threads, torch_allowed)
               for system, (factory, args, torch_allowed) in specs.items()}
    try:
        ready = {}
        for system, worker in started.items():
            worker.loaded = worker.reply()
            if "skipped" not in worker.loaded:
                ready[system] = worker
        yield ready
    finally:
        for worker in started.values():
            worker.close()
