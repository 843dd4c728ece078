"""POST /v1/chat/completions: an OpenAI chat body → the prompt the model's chat template
renders from its messages, and the SamplingParams of its n choices; and the chat shapes
of the answer (`chat.completion`) and of the stream's chunks (`chat.completion.chunk`).

Every field the chat shares with /v1/completions goes through params.completion_params,
so it is checked, defaulted and seeded the same way; the chat's own fields map onto those:
logprobs (true/false) + top_logprobs → logprobs = n, max_completion_tokens → max_tokens.
Without either, a reply may use the rest of the context (as OpenAI and vLLM do).
"""

from __future__ import annotations

from ..errors import AigcError
from ..text.chat_template import MessageError
from ..text.generator import TextGenerator
from ..text.sampling import MAX_LOGPROBS, Completion, SamplingParams, TokenLogprob
from .params import COMPLETION_FIELDS, _flag, _reject_unknown, completion_params

TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")
CHAT_ONLY_FIELDS = {"messages", "max_completion_tokens", "top_logprobs"}
CHAT_FIELDS = (COMPLETION_FIELDS - {"prompt", "echo", "best_of", "suffix"}) | CHAT_ONLY_FIELDS | set(TOOL_FIELDS)


def chat_request(body: dict, generator: TextGenerator) -> tuple[list[int], list[tuple[int, SamplingParams]], dict]:
    """(the rendered prompt's token ids, [(0, SamplingParams)] for the n choices, the response
    options as completion_params gives them); AigcError naming the field otherwise."""
    _reject_unknown(body, CHAT_FIELDS)
    for name in TOOL_FIELDS:
        if body.get(name) not in (None, []):
            raise AigcError(f"{name}: function calling is not supported (these language models have no tool-call "
                            "format); send messages only")
    template = generator.chat_template
    try:
        ids = generator.tokenizer.encode(template.render(body.get("messages")))
    except MessageError:
        raise
    except AigcError as error:  # the tokenizer's "prompt: contains a NUL character ...": the user sent messages
        raise MessageError("messages", f"the prompt the chat template makes from them: "
                                       f"{str(error).removeprefix('prompt: ')}") from None
    fields = {k: v for k, v in body.items() if k not in CHAT_ONLY_FIELDS and k not in TOOL_FIELDS}
    fields["logprobs"] = _logprobs_count(body)
    fields["max_tokens"] = _max_tokens(body, len(ids), generator.request_room)
    jobs, options = completion_params(fields, 1)
    jobs = [(i, template.with_stops(params)) for i, params in jobs]
    return ids, jobs, options | {"jobs": jobs}


def _logprobs_count(body: dict) -> int | None:
    """The chat's logprobs (a flag) and top_logprobs (0-20) as SamplingParams.logprobs."""
    wanted = _flag(body, "logprobs")
    top = body.get("top_logprobs")
    if top is None:
        return 0 if wanted else None
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_LOGPROBS:
        raise AigcError(f"top_logprobs: expected an integer in [0, {MAX_LOGPROBS}], got {top!r}")
    if not wanted:
        raise AigcError("top_logprobs: needs \"logprobs\": true")
    return top


def _max_tokens(body: dict, prompt_tokens: int, context: int | None) -> int | None:
    """max_completion_tokens, or its older name max_tokens, or else the rest of the context;
    a prompt that leaves no room for them is refused here, naming the messages."""
    newer, older = body.get("max_completion_tokens"), body.get("max_tokens")
    if newer is not None:
        if isinstance(newer, bool) or not isinstance(newer, int) or newer < 1:
            raise AigcError(f"max_completion_tokens: expected an integer >= 1, got {newer!r}")
        if older is not None and older != newer:
            raise AigcError(f"max_completion_tokens: {newer}, but max_tokens says {older!r}: give one of them")
    wanted = older if newer is None else newer
    if context is None or body.get("truncate_prompt") is True:
        return wanted
    if wanted is None and prompt_tokens < context:
        return context - prompt_tokens
    if wanted is None or (isinstance(wanted, int) and prompt_tokens + wanted > context):
        room = "no room for a reply" if wanted is None else f"no room for max_tokens {wanted}"
        raise AigcError(f"messages: the chat template makes a prompt of {prompt_tokens} tokens, which leaves {room} "
                        f"in the model's context of {context} tokens (\"truncate_prompt\": true keeps the end of "
                        "the conversation)")
    return wanted


# Shapes ----------------------------------------------------------------------------


def opening_choice(index: int) -> dict:
    """A choice's first chunk: the role, before any text."""
    return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}


def chunk_choice(index: int, text: str, entries: list[TokenLogprob] | None, finish_reason: str | None,
                 token_bytes: list[bytes] | None) -> dict:
    return {"index": index, "delta": {"content": text} if text else {},
            "logprobs": None if entries is None else {"content": logprob_content(entries, token_bytes)},
            "finish_reason": finish_reason}


def message_choice(index: int, completion: Completion, logprobs: int | None, token_bytes: list[bytes] | None) -> dict:
    return {"index": index, "message": {"role": "assistant", "content": completion.text},
            "logprobs": None if logprobs is None else {"content": logprob_content(completion.logprobs, token_bytes)},
            "finish_reason": completion.finish_reason}


def logprob_content(entries: list[TokenLogprob], token_bytes: list[bytes] | None) -> list[dict]:
    """OpenAI's chat logprobs: per token its text, log-probability, UTF-8 bytes (a token may
    hold part of a character: its bytes are exact where its text shows U+FFFD) and top ones."""
    def shown(token_id: int, text: str, logprob: float) -> dict:
        raw = token_bytes[token_id] if token_bytes is not None and token_bytes[token_id] else text.encode("utf-8")
        return {"token": text, "logprob": logprob, "bytes": list(raw)}
    return [shown(e.token_id, e.text, e.logprob) | {"top_logprobs": [shown(*top) for top in e.top]} for e in entries]
