"""Text model quality, torch-free: held-out bits per byte, and the parse rate of sampled code.

Bits per byte: the standard library files that training held out (corpus.py: the same
split on every machine), each tokenized by the model's own tokenizer and followed by
<|endoftext|>, as training encodes them, then cut into non-overlapping windows of seq_len + 1
tokens (the model's training seq_len from its provenance, else 256 capped by its context;
up to max_windows of them, spread evenly, as training's final measure takes them). Each
window is scored by the runtime (prompt_logprobs: the same logits a completion samples from);
bits per byte = Σ −log₂ p(token) over the tokens predicted (all but each window's first)
/ Σ UTF-8 bytes those tokens decode to (<|endoftext|>: none).

Parse rate: of n samples from the prompt "def" (temperature 0.8, top-k 40, 192 new tokens;
sample i seeded seed + i), the share whose first definition is complete and parses. The first
definition is the text from its start up to where Python's tokenizer closes the block of the
`def` line — the DEDENT back to column 0 (comments, blank lines and bracketed continuation
lines do not close it), or, for a one-line `def f(): ...`, the end of that line. It is
complete when more text follows that point (a statement at column 0: the model finished the
function and went on) or the sample ended with <|endoftext|> (the model ended the file there);
a sample cut off by the token limit before the block closed is incomplete. It parses when
ast.parse reads it as exactly one function definition.
"""

from __future__ import annotations

import ast
import functools
import io
import math
import tokenize
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import AigcError
from .corpus import corpus_files, read_documents, split_documents
from .prompt_logprobs import prompt_logprobs
from .sampling import SamplingParams

PARSE_PROMPT = "def"
PARSE_MAX_NEW_TOKENS = 192
PARSE_TEMPERATURE = 0.8
PARSE_TOP_K = 40
DEFAULT_PARSE_SAMPLES = 100
DEFAULT_SEQ_LEN = 256  # for a model whose provenance names no training seq_len


@dataclass
class TextQualityReport:
    heldout_bits_per_byte: float
    heldout_windows: int
    heldout_tokens: int  # tokens predicted (scored)
    heldout_bytes: int
    parse_samples: int
    parse_complete: int  # samples whose first definition is complete
    parse_ok: int        # ... and parses
    parse_rate: float    # parse_ok / parse_samples

    def as_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def heldout_texts() -> tuple[str, ...]:
    """The standard library files that training held out (the default corpus's split); read
    once per process (it reads and hashes every file of the standard library: seconds)."""
    return tuple(split_documents(read_documents(corpus_files(None)[1]))[1])


def heldout_windows(generator, texts: Sequence[str], max_windows: int | None = None) -> list[list[int]]:
    """Non-overlapping windows of seq_len + 1 token ids over the texts (see the module's head)."""
    tokenizer, eos = generator.tokenizer, generator.eos_token_id
    tokens = [t for text in texts for t in tokenizer.encode_raw(text) + [eos]]
    seq_len = generator.artifact.provenance.get("seq_len") or DEFAULT_SEQ_LEN
    context = generator.context_length
    length = min(seq_len, context - 1 if context else seq_len, len(tokens) - 1)
    if length < 1:
        raise AigcError(f"the held-out text is {len(tokens)} token(s): too little to measure a loss")
    available = (len(tokens) - 1) // length
    count = available if max_windows is None else min(max_windows, available)
    starts = np.unique(np.linspace(0, available - 1, count).round().astype(np.int64)) * length
    return [tokens[start:start + length + 1] for start in starts]


def bits_per_byte(generator, windows: list[list[int]]) -> tuple[float, int, int]:
    """(bits per byte, tokens scored, bytes) of token windows under a TextGenerator's model:
    each window's tokens after its first, given the ones before them in the window."""
    token_bytes = generator.tokenizer.token_bytes
    nats, tokens, size = 0.0, 0, 0
    for window in windows:
        entries = prompt_logprobs(generator._model, generator.tokenizer, window, 0)[1:]
        nats -= sum(entry.logprob for entry in entries)
        tokens += len(entries)
        size += (sum(len(token_bytes[t]) for t in window[1:]) if token_bytes is not None
                 else len(generator.tokenizer.decode(window[1:]).encode()))
    if size == 0:
        raise AigcError("the held-out windows decode to no text: nothing to measure bits per byte on")
    return nats / (size * math.log(2)), tokens, size


def first_definition(text: str, ended: bool) -> str | None:
    """The source of the first definition of `text` when it is complete, else None (see the
    module's head); ended: the sample stopped at <|endoftext|>, so nothing was cut off."""
    lines = io.StringIO(text).readlines()  # as tokenize reads them
    offsets = np.cumsum([0] + [len(line) for line in lines])
    header_done = block = False
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            kind = token.type
            if not header_done:
                header_done = kind == tokenize.NEWLINE
            elif kind == tokenize.INDENT and not block:
                block = True
            elif kind == tokenize.ENDMARKER or (
                    kind not in (tokenize.NL, tokenize.COMMENT)
                    and (not block or (kind == tokenize.DEDENT and token.start[1] == 0))):
                # the block closed here: at the next statement at column 0, or at the end of the text
                row, column = token.start
                end = int(offsets[row - 1]) + column if row <= len(lines) else len(text)
                return text[:end] if text[end:].strip() or ended else None
    except (tokenize.TokenError, SyntaxError):  # EOF inside a bracket or string; impossible indentation
        pass
    return text if ended else None


def parses_as_function(source: str) -> bool:
    """ast.parse reads `source` as exactly one function definition."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: a NUL character
        return False
    return len(tree.body) == 1 and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef))


def parse_rate(generator, n: int = DEFAULT_PARSE_SAMPLES, seed: int = 0) -> tuple[int, int]:
    """(complete, parsing) first definitions among n samples of PARSE_PROMPT."""
    params = [SamplingParams(max_new_tokens=PARSE_MAX_NEW_TOKENS, temperature=PARSE_TEMPERATURE, top_k=PARSE_TOP_K,
                             seed=(seed + i) % 2**64) for i in range(n)]
    complete = parsing = 0
    for completion in generator.generate([PARSE_PROMPT] * n, params):
        if completion.error:
            raise AigcError(f"sampling for the parse rate failed: {completion.error}")
        source = first_definition(completion.prompt + completion.text, completion.finish_reason == "stop")
        complete += source is not None
        parsing += source is not None and parses_as_function(source)
    return complete, parsing


def evaluate_text_model(generator, n: int = DEFAULT_PARSE_SAMPLES, seed: int = 0,
                        max_windows: int | None = None) -> dict:
    """Held-out bits per byte (all held-out windows, or max_windows of them) and the parse rate
    of n samples, of a TextGenerator."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise AigcError(f"n: expected an integer >= 1, got {n!r}")
    windows = heldout_windows(generator, heldout_texts(), max_windows)
    bits, tokens, size = bits_per_byte(generator, windows)
    complete, parsing = parse_rate(generator, n, seed)
    return TextQualityReport(bits, len(windows), tokens, size, n, complete, parsing, parsing / n).as_dict()
