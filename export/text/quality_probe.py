# The parse rate of an exported language model, measured at export time by the runtime's
# own `aigc_engine.text.quality.parse_rate` (samples of `def`, the first definition complete
# and parsing). A thin wrapper, as images/quality_probe.py: None when the runtime is not
# importable, so training never depends on it. Held-out bits per byte are measured by the
# training loop itself (text/train.py), in torch.
from __future__ import annotations

import os

from aigc_engine.text.corpus import STDLIB

from ..common.onnx_export import set_quality

DEFAULT_PARSE_SAMPLES = 100


def default_parse_samples(dataset: str) -> int:
    """How many samples the parse rate takes for a model trained on `dataset`: Python source
    (the default corpus) is what it is for; on other text it would measure nothing."""
    return DEFAULT_PARSE_SAMPLES if dataset == STDLIB else 0


def measure_parse_rate(onnx_path: str | os.PathLike, n: int, seed: int = 0) -> dict | None:
    """{"parse_samples", "parse_complete", "parse_rate"} of n samples of the model at onnx_path, or None."""
    try:
        from aigc_engine import TextGenerator
        from aigc_engine.text.quality import parse_rate
    except ImportError:
        return None
    complete, parsing = parse_rate(TextGenerator.load(str(onnx_path)), n, seed)
    return {"parse_samples": n, "parse_complete": complete, "parse_rate": parsing / n}


def stamp_parse_rate(path: str | os.PathLike, quality: dict | None, dataset: str, parse_samples: int | None) -> None:
    """Add the parse rate of parse_samples samples (None: default_parse_samples(dataset)) to
    `quality`, the held-out figures, in the provenance of the file at path."""
    n = default_parse_samples(dataset) if parse_samples is None else parse_samples
    parsing = measure_parse_rate(path, n) if n > 0 else None
    if parsing is not None:
        set_quality(path, {**(quality or {}), **parsing})
