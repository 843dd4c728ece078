"""Helpers for the Engine and server tests: a gate that holds the engine thread inside a
step (so a test can act while a request is known to sit in the batch, with no timing
guesses), and bounded polling."""

from __future__ import annotations

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
