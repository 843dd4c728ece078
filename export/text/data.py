# Text corpora for the language models: files or globs, by default the Python standard
# library's own source (on every machine, no download). Files split into train and
# held-out by a hash of their content (~2% held out, the same on every machine), encode
# to one int32 token array per side with <|endoftext|> after each file, and keep their
# UTF-8 byte counts so a loss in nats per token converts to bits per byte.
from __future__ import annotations

import glob
import hashlib
import math
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from .tokenizer import eos_id

STDLIB = "python-stdlib"
HELDOUT_PER_MILLE = 20  # files whose content hash mod 1000 falls below this are held out: ~2%
SINGLE_FILE_HELDOUT = 0.1  # a one-file corpus holds out its last 10% of lines instead
# Tests are 40% of the stdlib; encodings/ is mostly generated code-page tables (3 of the 11
# held-out files, half the held-out bytes, at a third of the loss of real code: skipped).
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "encodings"}


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


def corpus_files(data: str | list[str] | None) -> tuple[str, list[Path]]:
    """(name, sorted files) for data: None (the stdlib source) or paths, folders and globs."""
    if data is None or data == STDLIB:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = [p for p in root.rglob("*.py") if not _SKIP_DIRS & set(p.relative_to(root).parts[:-1])]
        if not files:
            raise ValueError(f"the default corpus is empty: no .py files under {root}")
        return STDLIB, sorted(files)
    specs = [data] if isinstance(data, str) else list(data)
    if not specs:
        raise ValueError("data: no paths or globs given")
    files: set[Path] = set()
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.is_file()]
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
        if not found:
            raise FileNotFoundError(f"data {spec!r}: no such file, and no files match it")
        files.update(p.resolve() for p in found)
    return " ".join(specs), sorted(files)


def read_documents(files: list[Path]) -> list[str]:
    """Each file's text (undecodable bytes become U+FFFD); empty files are dropped."""
    texts = [f.read_bytes().decode("utf-8", errors="replace") for f in files]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"the corpus is empty: {len(files)} file(s), none holds any text")
    return texts


def split_documents(texts: list[str]) -> tuple[list[str], list[str]]:
    """(train, held-out): by content hash; each side gets at least one document."""
    if len(texts) == 1:
        lines = texts[0].splitlines(keepends=True)
        cut = max(1, min(len(lines) - 1, round(len(lines) * (1 - SINGLE_FILE_HELDOUT))))
        if len(lines) < 2:
            cut = max(1, int(len(texts[0]) * (1 - SINGLE_FILE_HELDOUT)))
            return [texts[0][:cut]], [texts[0][cut:]]
        return ["".join(lines[:cut])], ["".join(lines[cut:])]
    keys = [int(hashlib.sha1(t.encode()).hexdigest()[:8], 16) % 1000 for t in texts]
    heldout = [i for i, k in enumerate(keys) if k < HELDOUT_PER_MILLE] or [int(np.argmin(keys))]
    if len(heldout) == len(texts):
        heldout = heldout[:-1]
    chosen = set(heldout)
    return [t for i, t in enumerate(texts) if i not in chosen], [texts[i] for i in heldout]


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
