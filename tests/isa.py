"""Run a check under every ISA build of the kernels this CPU can execute."""

from __future__ import annotations

import contextlib
import os

from aigc_engine import _C

ORDER = ("generic", "avx2", "avx512")
SUPPORTED = ORDER[: ORDER.index(_C.cpu_isa()) + 1]


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
