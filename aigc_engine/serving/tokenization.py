"""POST /tokenize and /detokenize bodies, in vLLM's shapes:
  {"model", "prompt", "add_special_tokens": true, "return_token_strs": false}
      → {"tokens": [...], "count": N, "max_model_len": N} (+ "token_strs" when asked)
  {"model", "tokens": [...]} → {"prompt": "..."}
checked field by field (AigcError naming the field: HTTP 400).
"""

from __future__ import annotations

from ..errors import AigcError, shown
from ..text.generator import TextGenerator

TOKENIZE_FIELDS = {"model", "prompt", "add_special_tokens", "return_token_strs"}
DETOKENIZE_FIELDS = {"model", "tokens"}


def _reject_unknown(body: dict, known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        hint = " (chat messages are not tokenized here)" if unknown[0] == "messages" else ""
        raise AigcError(f"{unknown[0]}: unrecognized request field{hint} (known: {', '.join(sorted(known))})")


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise AigcError(f"{name}: expected true or false, got {shown(value)}")
    return value


def tokenize(body: dict, generator: TextGenerator) -> dict:
    _reject_unknown(body, TOKENIZE_FIELDS)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise AigcError(f"prompt: expected a string, got {shown(prompt)}" if prompt is not None else "prompt: missing")
    add_special = _flag(body, "add_special_tokens", True)
    ids = generator.tokenizer.encode_raw(prompt, add_special)
    result = {"tokens": ids, "count": len(ids), "max_model_len": generator.context_length}
    if _flag(body, "return_token_strs", False):
        result["token_strs"] = generator.tokenizer.token_strings(ids)
    return result


def detokenize(body: dict, generator: TextGenerator) -> dict:
    _reject_unknown(body, DETOKENIZE_FIELDS)
    ids = body.get("tokens")
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise AigcError(f"tokens: expected a list of token ids (integers), got {shown(ids)}"
                        if ids is not None else "tokens: missing")
    bad = [t for t in ids if not 0 <= t < generator.vocab_size]
    if bad:
        raise AigcError(f"tokens: token id {bad[0]} is outside the model's vocabulary of {generator.vocab_size} tokens")
    return {"prompt": generator.tokenizer.decode(ids)}
