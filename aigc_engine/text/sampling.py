"""SamplingParams: how one request picks its tokens, and the results it gets back.

One typed field per knob, each with its range and its "off" value; every value is
checked when the object is made, so a bad parameter fails at the caller's line with a
message naming the field, before any work starts. Numbers are checked as the kernels see
them, in float32: 1e-46 is a valid float64 top_p but rounds to 0.0 there.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass, field

import numpy as np

from ..errors import AigcError, shown

MAX_LOGPROBS = 20
# Stop strings are searched for in every new piece of text: bounded so that one request
# cannot make every step of its batch slow (60,000 of them once took 236 s of a server's time).
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256
# The smallest repetition penalty: dividing a logit by less could overflow float32 to +inf.
MIN_REPETITION_PENALTY = 0.01


def _number(name: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    """A finite number in the interval, checked after rounding to float32 as the kernels read it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AigcError(f"{name}: expected a finite number, got {shown(value)}")
    try:
        with np.errstate(over="ignore"):
            as_float32 = float(np.float32(value))
    except OverflowError:  # an int beyond float64
        as_float32 = math.inf
    if not math.isfinite(as_float32):
        raise AigcError(f"{name}: expected a finite number, got {shown(value)}")
    below = as_float32 <= low if low_open else as_float32 < low
    above = as_float32 >= high if high_open else as_float32 > high
    if below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        rounded = "" if as_float32 == value else f" ({as_float32!r} in float32)"
        raise AigcError(f"{name}: expected a value in {interval}, got {shown(value)}{rounded}")
    return float(value)


class _Default(int):
    """max_new_tokens' default, told apart from an explicit 64 (`is`, not ==) so that
    max_tokens may take its place and a contradicting pair is refused."""


DEFAULT_MAX_NEW_TOKENS = _Default(64)


def _integer(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AigcError(f"{name}: expected an integer, got {shown(value)}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise AigcError(f"{name}: expected an integer {bound}, got {shown(value)}")
    return value


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens. These defaults are `aigc generate`'s and HTTP's too,
    except where the README's "Seeds and defaults" table says why not (HTTP max_tokens 16,
    the CLI's temperature 0.8 and top_p 0.95)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # >= 1 (the default is 64)
    temperature: float = 1.0          # >= 0; 0 = greedy (argmax)
    top_k: int = 0                    # >= 0; 0 = off
    top_p: float = 1.0                # (0, 1]; 1 = off
    min_p: float = 0.0                # [0, 1]; 0 = off (drop tokens below min_p × the top probability)
    repetition_penalty: float = 1.0   # [0.01, 10]; 1 = off (HF rule, over prompt and generated tokens)
    presence_penalty: float = 0.0     # [-2, 2]; 0 = off (OpenAI rule, over generated tokens)
    frequency_penalty: float = 0.0    # [-2, 2]; 0 = off (OpenAI rule, over generated tokens)
    seed: int | None = None           # [0, 2**64 - 1]; None = fresh: 64 random bits per request
    stop: tuple[str, ...] = ()        # strings that end the text (not included in it)
    logprobs: int | None = None       # None = off; n in [0, 20]: the chosen token's and the top n
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit, [-100, 100]
    ignore_eos: bool = False          # keep going past the end-of-text token
    truncate_prompt: bool = False     # drop the oldest prompt tokens that do not fit the context
    token_healing: bool = True        # a prompt ending in whitespace: its last token re-chosen (healing.py)
    max_tokens: InitVar[int | None] = None  # vLLM's and OpenAI's name for max_new_tokens: sets it

    def __post_init__(self, max_tokens: int | None) -> None:
        if max_tokens is not None:
            _integer("max_tokens", max_tokens, 1)
            if self.max_new_tokens is not DEFAULT_MAX_NEW_TOKENS and self.max_new_tokens != max_tokens:
                raise AigcError(f"max_tokens: {shown(max_tokens)} contradicts max_new_tokens="
                                f"{shown(self.max_new_tokens)} (two names for one knob: give one of them)")
            object.__setattr__(self, "max_new_tokens", max_tokens)
        _integer("max_new_tokens", self.max_new_tokens, 1)
        object.__setattr__(self, "max_new_tokens", int(self.max_new_tokens))  # the default as a plain int
        _number("temperature", self.temperature, 0.0, 100.0)
        _integer("top_k", self.top_k, 0)
        _number("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _number("min_p", self.min_p, 0.0, 1.0)
        _number("repetition_penalty", self.repetition_penalty, MIN_REPETITION_PENALTY, 10.0)
        _number("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _number("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        if self.seed is not None:
            _integer("seed", self.seed, 0, 2**64 - 1)
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stop, (tuple, list)) or not all(isinstance(s, str) and s for s in stop):
            raise AigcError(f"stop: expected a non-empty string or a list of them, got {shown(self.stop)}")
        if len(stop) > MAX_STOP_STRINGS:
            raise AigcError(f"stop: at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}")
        if max(map(len, stop), default=0) > MAX_STOP_LENGTH:
            raise AigcError(f"stop: each stop string at most {MAX_STOP_LENGTH} characters, got one of "
                            f"{max(map(len, stop))}")
        object.__setattr__(self, "stop", tuple(stop))
        if self.logprobs is not None:
            _integer("logprobs", self.logprobs, 0, MAX_LOGPROBS)
        if not isinstance(self.logit_bias, dict):
            raise AigcError(f"logit_bias: expected a dict of token id -> bias, got {shown(self.logit_bias)}")
        for token, bias in self.logit_bias.items():
            _integer("logit_bias token id", token, 0, 2**31 - 1)
            _number(f"logit_bias[{token}]", bias, -100.0, 100.0)
        for name in ("ignore_eos", "truncate_prompt", "token_healing"):
            if not isinstance(getattr(self, name), bool):
                raise AigcError(f"{name}: expected True or False, got {shown(getattr(self, name))}")


@dataclass
class TokenLogprob:
    """One generated token: its log-probability under the model's raw distribution, and
    the `n` most likely tokens at that step (when SamplingParams.logprobs = n > 0)."""
    token_id: int
    text: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class Completion:
    """The result of one prompt. finish_reason: 'stop' (end-of-text token or a stop
    string), 'length' (max_new_tokens) or 'error' (then `error` says why; the other
    prompts of the call are unaffected)."""
    prompt: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = ""
    prompt_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    seed: int | None = None
    error: str | None = None
