"""Helpers for the Engine and server tests: a gate that holds the engine thread inside a
step (so a test can act while a request is known to sit in the batch, with no timing
guesses), and bounded polling."""

from __future__ import annotations

import contextlib
import signal
import threading
import time

WAIT = 30  # seconds: every wait in these tests is bounded


class Gate:
    """Wraps a sampler `sample(logits, requests)`. While closed, the step that gives some
    request its `after`-th token blocks (after sampling) until the gate opens."""

    def __init__(self, sample, after: int = 2):
        self.sample = sample
        self.after = after
        self.opened = threading.Event()
        self.opened.set()
        self.reached = threading.Event()
        self.seen: list = []  # requests that reached the gate

    def close(self) -> "Gate":
        self.reached.clear()
        self.opened.clear()
        return self

    def open(self) -> None:
        self.opened.set()

    def __call__(self, logits, requests) -> None:
        self.sample(logits, requests)
        if self.opened.is_set():
            return
        held = [r for r in requests if len(r.generated) >= self.after]
        if held:
            self.seen += held
            self.reached.set()
            if not self.opened.wait(WAIT):
                raise TimeoutError("the test never opened the gate")


def install_gate(generator, after: int = 2) -> Gate:
    """A gate on the sampler of the generator's scheduler (every backend has one)."""
    gate = Gate(generator.scheduler._sample, after)
    generator.scheduler._sample = gate
    return gate


def wait_until(condition, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting for {what} after {timeout} s")
        time.sleep(0.01)


@contextlib.contextmanager
def ends_cleanly_on_sigint(process):
    """For a started `aigc serve` process (stderr piped): after the block, SIGINT must end it
    with status 0; whatever happens, it does not outlive the test."""
    try:
        yield process
        process.send_signal(signal.SIGINT)
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
        process.stderr.close()


class Running:
    """A Server (aigc_engine.serving.app) on a free loopback port, uvicorn in a background
    thread; stop() shuts it down and closes its engines."""

    def __init__(self, server):
        from aigc_engine.serving.run import bind, uvicorn_server

        self.server = server
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.runner = uvicorn_server(server)
        self.thread = threading.Thread(target=self.runner.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        wait_until(lambda: self.runner.started, "the server to start")

    def stop(self) -> None:
        self.runner.should_exit = True
        self.thread.join(WAIT)
        self.sock.close()
        for engine in self.server.text.values():
            engine.close(cancel=True, timeout=WAIT)
        assert not self.thread.is_alive()
