# `aigc export`: re-export a model from its training checkpoint, by family — the image
# side (images/export.py, scored by the quality probe) or the text side (text/export.py,
# whose held-out quality was measured during training and is in the checkpoint; the parse
# rate is measured on the exported file).
from __future__ import annotations

import os

from aigc_engine.artifacts.schema import META_FAMILY, TEXT_FAMILIES

from .common.checkpoint import load_checkpoint
from .common.onnx_export import read_metadata, read_provenance, set_config
from .images.export import export_trained_image
from .images.quality_probe import stamp_image_quality
from .text.export import DEFAULT_PROMPT_PREFIX, export_trained_text
from .text.quality_probe import stamp_parse_rate


def export_checkpoint(
    checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, *, quality_n: int = 1000,
    parse_samples: int | None = None,
) -> dict:
    """Re-export a model from a training checkpoint (a file, or the folder holding one).

    Image families: when quality_n > 0 and the runtime's quality measure is available, the
    exported file is scored on quality_n samples and the result lands in provenance["quality"].
    Text families keep the held-out quality stored at the end of training, and add the parse
    rate of parse_samples samples (None: 100 for a model of Python source, else none).
    Returns the provenance written into the file.
    """
    state = load_checkpoint(checkpoint_path)
    if state["family"] in TEXT_FAMILIES:
        return read_provenance(export_trained_text(state, out_path, parse_samples=parse_samples))
    return export_trained_image(state, out_path, quality_n=quality_n)


def stamp_quality(path: str | os.PathLike, *, quality_n: int = 1000, parse_samples: int | None = None) -> dict:
    """Measure the quality of an exported file again, as its export would, and stamp it into
    the file's provenance (for a file exported before a figure was stamped, or whose
    checkpoint is gone). Image families: quality_n samples (quality_probe). Text families:
    the held-out figures training measured stay; the parse rate of parse_samples samples is
    added (None: 100 for a model of Python source). Returns the provenance written."""
    provenance = read_provenance(path)
    if read_metadata(path)[META_FAMILY] in TEXT_FAMILIES:
        stamp_parse_rate(path, provenance.get("quality"), provenance["dataset"], parse_samples)
    else:
        stamp_image_quality(path, n=quality_n)
    return read_provenance(path)


def set_prompt_prefix(path: str | os.PathLike, prefix: str = DEFAULT_PROMPT_PREFIX, *,
                      parse_samples: int | None = None) -> dict:
    """Give the text model file at `path` the prompt prefix `aigc train` now writes (for a file
    exported before it did), then measure its parse rate again, which depends on it (as
    stamp_quality). Returns the provenance written."""
    family = read_metadata(path)[META_FAMILY]
    if family not in TEXT_FAMILIES:
        raise ValueError(f"{path}: a prompt prefix is a text model's; this is a {family}")
    set_config(path, {"prompt_prefix": prefix})
    return stamp_quality(path, parse_samples=parse_samples)
