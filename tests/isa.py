"""Run a check under every ISA build of the kernels.

`EACH` parametrises a test over every ISA (generic, avx2, avx512); the cases this CPU
cannot execute are skipped with the missing feature named, so they show in the report
rather than silently disappearing. `forced(name)` sets AIGC_FORCE_ISA for a block.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from aigc_engine import _C

ORDER = ("generic", "avx2", "avx512")
SUPPORTED = ORDER[: ORDER.index(_C.cpu_isa()) + 1]
# What the CPU must have for each build (csrc/cpu/isa.cc, CMake's aigc_isa_flags_*).
FEATURES = {"generic": "x86-64", "avx2": "AVX2 + FMA + F16C", "avx512": "AVX-512 F/BW/VL/DQ"}


def skip_reason(name: str) -> str | None:
    """Why the `name` build cannot run here, or None when it can."""
    if name in SUPPORTED:
        return None
    return f"{name}: this CPU lacks {FEATURES[name]} (its best build is {_C.cpu_isa()})"


def params(names=ORDER) -> list:
    """pytest.param per ISA name, marked skip where this CPU cannot run it."""
    return [pytest.param(name, id=name, marks=pytest.mark.skipif(skip_reason(name) is not None,
                                                                  reason=skip_reason(name) or ""))
            for name in names]


# @isa.EACH on a test taking `isa_name`: one case per ISA build.
EACH = pytest.mark.parametrize("isa_name", params())


@contextlib.contextmanager
def forced(isa: str):
    """AIGC_FORCE_ISA=isa for the duration (the extension reads it at every call)."""
    previous = os.environ.get("AIGC_FORCE_ISA")
    os.environ["AIGC_FORCE_ISA"] = isa
    try:
        yield
    finally:
        if previous is None:
            del os.environ["AIGC_FORCE_ISA"]
        else:
            os.environ["AIGC_FORCE_ISA"] = previous
