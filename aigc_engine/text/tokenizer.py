"""The tokenizer stored in a text model's ONNX file, and UTF-8-safe incremental decoding.

A byte-level BPE token can end in the middle of a multi-byte character; decoding it
alone gives U+FFFD. IncrementalDetokenizer holds such bytes back until the character is
complete, so streamed text never contains a broken character that the full text lacks.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from ..errors import AigcError, ModelFileError

REPLACEMENT = "\ufffd"


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> "TextTokenizer":
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as error:  # tokenizers raises plain Exception subclasses
            raise ModelFileError(f"{source}: the 'aigc.tokenizer' metadata is not a valid tokenizer ({error})") from None

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a prompt; rejects what no model should see silently."""
        if not isinstance(prompt, str):
            raise AigcError(f"prompt: expected a string, got {type(prompt).__name__}")
        if not prompt:
            raise AigcError("prompt: empty")
        if "\x00" in prompt:
            raise AigcError(f"prompt: contains a NUL character at position {prompt.index(chr(0))}")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as error:
            raise AigcError(f"prompt: not valid UTF-8 (unpaired surrogate at position {error.start})") from None
        return self._tokenizer.encode(prompt, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id])


class IncrementalDetokenizer:
    """Feed generated token ids one at a time; get back the new complete text each time.

    Decodes a short window — the tokens since the last complete boundary — rather than
    the whole output at every step.
    """

    def __init__(self, tokenizer: TextTokenizer):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0  # window start: text up to here is settled
        self._read_offset = 0    # tokens up to here have been turned into text

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._tokenizer.decode(self._ids[self._prefix_offset:self._read_offset])
        full = self._tokenizer.decode(self._ids[self._prefix_offset:])
        if len(full) <= len(prefix) or full.endswith(REPLACEMENT):
            return ""  # an incomplete character (or a token with no text): wait for more
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return full[len(prefix):]

    def flush(self) -> str:
        """At the end: whatever is still held back (an incomplete character stays U+FFFD)."""
        prefix = self._tokenizer.decode(self._ids[self._prefix_offset:self._read_offset])
        full = self._tokenizer.decode(self._ids[self._prefix_offset:])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix):] if len(full) > len(prefix) else ""
