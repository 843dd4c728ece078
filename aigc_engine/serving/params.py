"""Request bodies of `aigc serve` → the engine's arguments, checked field by field.

An OpenAI field maps to one SamplingParams field (max_tokens → max_new_tokens), whose
own checks give the messages; fields the server does not know are refused by name
rather than silently ignored.
"""

from __future__ import annotations

from .. import ops
from ..errors import AigcError
from ..images.generator import ImageGenerator
from ..text.sampling import SamplingParams

MAX_N = 16           # choices per prompt, and images per request
DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default, so OpenAI clients get what they expect

# OpenAI name → SamplingParams name; the last six are extensions (vLLM spells most alike).
SAMPLING_FIELDS = {"max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
                   "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
                   "stop": "stop", "logprobs": "logprobs", "top_k": "top_k", "min_p": "min_p",
                   "repetition_penalty": "repetition_penalty", "ignore_eos": "ignore_eos",
                   "truncate_prompt": "truncate_prompt", "token_healing": "token_healing"}
COMPLETION_FIELDS = set(SAMPLING_FIELDS) | {"model", "prompt", "n", "seed", "stream", "stream_options", "echo",
                                            "logit_bias", "best_of", "suffix", "user"}
IMAGE_FIELDS = {"model", "prompt", "n", "seed", "truncation", "response_format", "size", "user"}


def _reject_unknown(body: dict, known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise AigcError(f"{unknown[0]}: unrecognized request field (known: {', '.join(sorted(known))})")


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise AigcError(f"{name}: expected true or false, got {value!r}")
    return value


def _count(body: dict, name: str, high: int) -> int:
    value = body.get(name)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise AigcError(f"{name}: expected an integer in [1, {high}], got {value!r}")
    return value


def prompts_of(prompt) -> list:
    """A string, a list of strings, a list of token ids, or a list of lists of token ids."""
    def is_ids(value) -> bool:
        return isinstance(value, list) and bool(value) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in value)
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if is_ids(prompt):
            return [prompt]
        if all(is_ids(p) for p in prompt):
            return list(prompt)
    raise AigcError(f"prompt: expected a string, a list of strings, or token ids (a list of integers, or a list "
                    f"of such lists), got {str(prompt)[:60]!r}" if prompt is not None else "prompt: missing")


def choices_per_prompt(body: dict) -> int:
    """n, checked: 1 to MAX_N choices per prompt."""
    return _count(body, "n", MAX_N)


def completion_params(body: dict, num_prompts: int) -> tuple[list[tuple[int, SamplingParams]], dict]:
    """[(prompt index, SamplingParams)] — n per prompt, prompt-major as OpenAI numbers the
    choices — and the response options (stream, echo, logprobs, include_usage)."""
    _reject_unknown(body, COMPLETION_FIELDS)
    n = _count(body, "n", MAX_N)
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or not isinstance(best_of, int) or best_of != n):
        raise AigcError(f"best_of: only best_of = n (an integer) is supported (n={n}), got {best_of!r}")
    if body.get("suffix"):
        raise AigcError("suffix: not supported (these models only continue a prompt)")
    stream, echo = _flag(body, "stream"), _flag(body, "echo")
    stream_options = body.get("stream_options")
    if stream_options is not None and (not stream or not isinstance(stream_options, dict)):
        raise AigcError("stream_options: only with stream=true, as an object such as {\"include_usage\": true}")
    include_usage = _flag(stream_options or {}, "include_usage")
    fields = {ours: body[theirs] for theirs, ours in SAMPLING_FIELDS.items() if body.get(theirs) is not None}
    fields.setdefault("max_new_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(fields.get("stop"), list):
        fields["stop"] = tuple(fields["stop"])
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise AigcError(f"logit_bias: expected an object of token id → bias, got {bias!r}")
        try:
            fields["logit_bias"] = {int(token): value for token, value in bias.items()}
        except ValueError:
            raise AigcError(f"logit_bias: keys must be token ids, got {sorted(bias)[:3]!r}") from None
    seed = body.get("seed")
    if seed is not None:
        seed = ops.check_seed(seed)
    jobs = []
    for i in range(num_prompts):
        for j in range(n):  # choice j of a prompt: seed + j mod 2**64, so the n choices differ
            choice_seed = None if seed is None else ops.sample_seed(seed, j)
            jobs.append((i, SamplingParams(**fields, seed=choice_seed)))
    logprobs = fields.get("logprobs")
    return jobs, {"stream": stream, "echo": echo, "logprobs": logprobs, "include_usage": include_usage,
                  "jobs": jobs}


def image_params(body: dict, generator: ImageGenerator) -> tuple[int, int, float | None]:
    """(n, seed, truncation). `prompt` is accepted and ignored: the models are unconditional."""
    _reject_unknown(body, IMAGE_FIELDS)
    n = _count(body, "n", MAX_N)
    seed = body.get("seed")
    seed = ops.fresh_seed() if seed is None else ops.check_seed(seed)
    truncation = body.get("truncation")
    if truncation is not None:
        ops.check_truncation(truncation)
    response_format = body.get("response_format")
    if response_format not in (None, "b64_json"):
        raise AigcError(f"response_format: only 'b64_json' is supported, got {response_format!r}")
    size = body.get("size")
    _, height, width = generator.image_shape
    if size not in (None, f"{width}x{height}"):
        raise AigcError(f"size: this model makes {width}x{height} images, got {size!r}")
    return n, seed, truncation
