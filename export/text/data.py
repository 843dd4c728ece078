# Text corpora for the language models: files or globs, by default the Python standard
# library's own source (on every machine, no download). Files split into train and
# held-out by a hash of their content (~2% held out, the same on every machine; the
# runtime's aigc_engine/text/corpus.py, which `aigc eval` measures on too), encode
# to one int32 token array per side with <|endoftext|> after each file, and keep their
# UTF-8 byte counts so a loss in nats per token converts to bits per byte.
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

# Re-exported: the training side has always named them here.
from aigc_engine.text.corpus import corpus_files, read_documents, split_documents  # noqa: F401

from .tokenizer import eos_id


@dataclass
class TextCorpus:
    name: str  # "python-stdlib" or the paths/globs given, joined by spaces
    train: np.ndarray  # (N,) int32 token ids
    heldout: np.ndarray  # (M,) int32 token ids
    train_bytes: int  # UTF-8 bytes of the text behind each side
    heldout_bytes: int
    files: tuple[int, int]  # (train files, held-out files)
    digest: str  # sha1 over the files' contents in order: a resumed run must see the same corpus

    def bits_per_byte(self, loss: float) -> float:
        """Held-out loss in nats per token → bits per byte of held-out text."""
        return loss * len(self.heldout) / (self.heldout_bytes * math.log(2))


def encode_documents(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """All texts' tokens, each followed by <|endoftext|>, as one int32 array."""
    eos = eos_id(tokenizer)
    pieces = [np.array(e.ids + [eos], dtype=np.int32) for e in tokenizer.encode_batch(texts)]
    return np.concatenate(pieces)


def build_corpus(name: str, train_texts: list[str], heldout_texts: list[str], tokenizer: Tokenizer,
                 digest: str) -> TextCorpus:
    return TextCorpus(name, encode_documents(tokenizer, train_texts), encode_documents(tokenizer, heldout_texts),
                      sum(len(t.encode()) for t in train_texts), sum(len(t.encode()) for t in heldout_texts),
                      (len(train_texts), len(heldout_texts)), digest)


def corpus_digest(texts: list[str]) -> str:
    digest = hashlib.sha1()
    for text in texts:
        digest.update(hashlib.sha1(text.encode()).digest())
    return digest.hexdigest()


def random_windows(tokens: np.ndarray, batch: int, length: int, seed: int, step: int) -> torch.Tensor:
    """(batch, length + 1) int64 windows at random offsets, a pure function of (seed, step)."""
    if len(tokens) < length + 1:
        raise ValueError(f"the training text is {len(tokens)} tokens, too short for windows of "
                         f"seq_len + 1 = {length + 1}: give more data or a smaller seq_len")
    starts = np.random.default_rng([seed, step]).integers(0, len(tokens) - length, batch)
    return torch.from_numpy(tokens[starts[:, None] + np.arange(length + 1)].astype(np.int64))


def heldout_windows(tokens: np.ndarray, length: int, max_windows: int) -> torch.Tensor:
    """(n, L + 1) non-overlapping windows, L = min(length, len − 1): all of them, or
    max_windows spread evenly over the held-out text, so that a short periodic measure
    and the full one at the end look at the same mix of files."""
    length = min(length, len(tokens) - 1)
    if length < 1:
        raise ValueError(f"the held-out text is {len(tokens)} token(s): too little to measure a loss")
    available = max(1, (len(tokens) - 1) // length)
    index = np.unique(np.linspace(0, available - 1, min(max_windows, available)).round().astype(np.int64))
    starts = index * length
    return torch.from_numpy(tokens[starts[:, None] + np.arange(length + 1)].astype(np.int64))
