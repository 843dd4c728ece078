"""Text corpora, torch-free: which files make a corpus (by default the Python standard
library's own source, on every machine, no download) and how they split into train and
held-out (by a hash of each file's content: ~2% held out, the same on every machine).
Training (aigc_export's text/data.py) and `aigc eval`'s held-out bits per byte both use it.
"""

from __future__ import annotations

import glob
import hashlib
import sysconfig
from pathlib import Path

import numpy as np

STDLIB = "python-stdlib"
HELDOUT_PER_MILLE = 20  # files whose content hash mod 1000 falls below this are held out: ~2%
SINGLE_FILE_HELDOUT = 0.1  # a one-file corpus holds out its last 10% of lines instead
# Tests are 40% of the stdlib; encodings/ is mostly generated code-page tables (3 of the 11
# held-out files, half the held-out bytes, at a third of the loss of real code: skipped).
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "encodings"}


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
