"""The tokenizer stored in a text model's ONNX file, and UTF-8-safe incremental decoding.

A byte-level BPE token can end in the middle of a multi-byte character; decoding it
alone gives U+FFFD. IncrementalDetokenizer holds such bytes back until the character is
complete, so streamed text never contains a broken character that the full text lacks.
For a byte-level tokenizer (GPT-2's kind, every one `aigc train` writes) each token is a
fixed byte string, so a new token costs one table look-up — of its text when its bytes
are whole characters and none are held back, else of its bytes for an incremental UTF-8
decode — not two decodes of a window of tokens through the tokenizer (measured at
~10 us a token, a tenth of a pycode-gpt decode step per row at batch 32).
"""

from __future__ import annotations

import codecs
import json

import numpy as np

from tokenizers import Tokenizer

from ..errors import AigcError, ModelFileError

REPLACEMENT = "\ufffd"


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._token_bytes: list[bytes] | None | bool = False  # False: not looked at yet
        self._token_texts: list[str | None] | None = None
        self._extending: dict[tuple[int, int], np.ndarray] = {}

    @property
    def token_bytes(self) -> list[bytes] | None:
        """Each token id's bytes in decoded text (b"" for special tokens, which decode
        skips), when the tokenizer is byte-level BPE; else None (decode windows instead)."""
        if self._token_bytes is False:
            self._token_bytes = _byte_level_table(self._tokenizer)
        return self._token_bytes

    @property
    def token_texts(self) -> list[str | None] | None:
        """With token_bytes: each token's text where its bytes are whole UTF-8 characters,
        None where they are not (part of a character); None for other tokenizers."""
        if self._token_texts is None and self.token_bytes is not None:
            self._token_texts = [_whole_characters(b) for b in self.token_bytes]
        return self._token_texts

    def tokens_extending(self, token_id: int, vocab_size: int) -> np.ndarray:
        """Ids below vocab_size whose bytes start with token_id's bytes (itself included),
        for a byte-level tokenizer (token healing); computed once per token."""
        key = (token_id, vocab_size)
        if key not in self._extending:
            prefix = self.token_bytes[token_id]
            self._extending[key] = np.array(
                [i for i, b in enumerate(self.token_bytes[:vocab_size]) if b.startswith(prefix)], np.int64)
        return self._extending[key]

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

    def encode_raw(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of any text (empty included), as the tokenizer gives them; with
        add_special_tokens, the tokenizer's own post-processor adds its special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each id's token as the vocabulary spells it (byte-level BPE: 'Ġthe' for ' the')."""
        return [self._tokenizer.id_to_token(i) or "" for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def id_to_token(self, token_id: int) -> str | None:
        """The token's own string in the vocabulary (e.g. '<|endoftext|>'), None for an unknown id."""
        return self._tokenizer.id_to_token(token_id)

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id])


class IncrementalDetokenizer:
    """Feed generated token ids one at a time; get back the new complete text each time.

    Decodes a short window — the tokens since the last complete boundary — rather than
    the whole output at every step.
    """

    def __init__(self, tokenizer: TextTokenizer):
        self._tokenizer = tokenizer
        self._bytes = tokenizer.token_bytes
        self._texts = tokenizer.token_texts
        # Byte-level: an incremental UTF-8 decoder holds back an incomplete character.
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace") if self._bytes is not None else None
        self._ids: list[int] = []
        self._prefix_offset = 0  # window start: text up to here is settled
        self._read_offset = 0    # tokens up to here have been turned into text

    def push(self, token_id: int) -> str:
        if self._utf8 is not None:
            if not self._utf8.buffer:  # no character's start held back: most tokens' text as it is
                text = self._texts[token_id]
                if text is not None:
                    return text
            return self._utf8.decode(self._bytes[token_id])
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
        if self._utf8 is not None:
            return self._utf8.decode(b"", final=True)
        prefix = self._tokenizer.decode(self._ids[self._prefix_offset:self._read_offset])
        full = self._tokenizer.decode(self._ids[self._prefix_offset:])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix):] if len(full) > len(prefix) else ""


def _byte_level_table(tokenizer: Tokenizer) -> list[bytes] | None:
    """Token id → bytes for a byte-level BPE with no normalizer; None for any other kind,
    or when a token's text is not made of the byte alphabet (a non-special added token)."""
    spec = json.loads(tokenizer.to_str())
    if (spec.get("model") or {}).get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel" \
            or spec.get("normalizer") is not None:
        return None
    byte_of = {symbol: index for index, symbol in enumerate(_byte_alphabet())}
    special = {token["id"] for token in spec.get("added_tokens", []) if token.get("special")}
    table = []
    for token_id in range(tokenizer.get_vocab_size(with_added_tokens=True)):
        text = tokenizer.id_to_token(token_id)
        if token_id in special:
            table.append(b"")
        elif text is None or any(symbol not in byte_of for symbol in text):
            return None
        else:
            table.append(bytes(byte_of[symbol] for symbol in text))
    return table


def _whole_characters(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _byte_alphabet() -> list[str]:
    """The symbol of each byte 0..255 in byte-level BPE (GPT-2's bytes_to_unicode):
    printable Latin-1 bytes stand for themselves, the rest map to U+0100 onwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]
