# build_model over every family: `config` is laid over DEFAULT_CONFIGS[family] (unknown
# keys are errors), then the image or text side builds the nn.Module and checks the sizes.
# The family names come from the runtime's schema (aigc_engine.artifacts.schema).
from __future__ import annotations

import copy

from torch import nn

from aigc_engine.artifacts.schema import FAMILIES, TEXT_FAMILIES

from .images.models import IMAGE_DEFAULT_CONFIGS, build_image_model
from .text.models import TEXT_DEFAULT_CONFIGS, build_text_model

DEFAULT_CONFIGS = {**IMAGE_DEFAULT_CONFIGS, **TEXT_DEFAULT_CONFIGS}


def build_model(family: str, config: dict | None = None) -> nn.Module:
    """A fresh model of `family` with `config` laid over DEFAULT_CONFIGS[family]."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}: expected one of {', '.join(FAMILIES)}")
    unknown = set(config or {}) - set(DEFAULT_CONFIGS[family])
    if unknown:
        raise ValueError(f"{family} config: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_CONFIGS[family])}")
    cfg = {**copy.deepcopy(DEFAULT_CONFIGS[family]), **copy.deepcopy(config or {})}
    if family in TEXT_FAMILIES:
        return build_text_model(family, cfg)
    return build_image_model(family, cfg)
