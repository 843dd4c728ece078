# Sample quality of an exported image model, measured at export time by the runtime's
# own `aigc_engine.images.quality.evaluate_model` (Fréchet distance on the shipped digit
# classifier's features, class coverage, confidence). A thin wrapper: it returns None
# when that module or its classifier is not there, or when the model does not make
# digit-shaped images, so training never depends on it.
from __future__ import annotations

import json
import os

from aigc_engine.artifacts.schema import META_CONFIG

from ..common.onnx_export import read_metadata, set_quality


def measure_quality(onnx_path: str | os.PathLike, n: int = 1000, seed: int = 0) -> dict | None:
    """Quality metrics of `n` samples from the model at onnx_path, as plain JSON values, or None."""
    try:
        from aigc_engine.images.quality import DIGIT_SHAPE, evaluate_model
    except ImportError:
        return None
    config = json.loads(read_metadata(onnx_path)[META_CONFIG])
    if (config["channels"], config["height"], config["width"]) != tuple(DIGIT_SHAPE):
        return None
    try:
        metrics = evaluate_model(str(onnx_path), n, seed)
    except FileNotFoundError:
        return None
    # numpy scalars and arrays → floats and lists, so the dict goes into JSON metadata as is
    return json.loads(json.dumps(metrics, default=lambda value: value.tolist()))


def stamp_image_quality(onnx_path: str | os.PathLike, n: int = 1000) -> None:
    """Measure `n` samples (measure_quality) and stamp the result into the file's provenance;
    nothing when n is 0 or there is nothing to measure with."""
    quality = measure_quality(onnx_path, n=n) if n > 0 else None
    if quality is not None:
        set_quality(onnx_path, quality)
