"""_C.isa_peak, the roofline of benchmarks/linear.py: a figure for the FMA the float32
projections use, None for an instruction no kernel of the active ISA uses here (rather
than an error: the benchmark asks for each dtype's instruction and prints what it gets),
ValueError for a name it does not know, and a peak not below what the projection itself
reaches (a mis-counted peak would be). No speed is asserted otherwise."""

import math
import time

import numpy as np
import pytest

import isa
from aigc_engine import _C

NAMES = ("vfmadd231ps", "vpmaddwd", "vpdpbusd", "tdpbusd")
needs_fma = pytest.mark.skipif(_C.active_isa() == "generic", reason="the generic build has no FMA kernels")
needs_amx = pytest.mark.skipif(not _C.cpu_has_amx_int8(), reason="no AMX-INT8 on this CPU")


@needs_fma
def test_fma_peak_is_a_positive_finite_rate():
    assert "vfmadd231ps" in _C.isa_peak_instructions()
    peak = _C.isa_peak("vfmadd231ps", 0.05)
    assert math.isfinite(peak) and peak > 0


def test_instructions_follow_the_projections():
    available = _C.isa_peak_instructions()
    used = {_C.linear_instruction(dtype, m=m) for dtype in ("float32", "bfloat16", "int8") for m in (1, 16)} - {None}
    assert set(available) == used
    if _C.active_isa() != "generic":
        assert _C.linear_instruction("bfloat16") == "vfmadd231ps"  # bf16 widened to float32, then FMA


def test_an_instruction_not_used_here_gives_none():
    # vpmaddwd (avx2) and vpdpbusd (AVX-512 VNNI) never both serve the int8 kernel.
    missing = [name for name in NAMES if name not in _C.isa_peak_instructions()]
    assert missing
    for name in missing:
        assert _C.isa_peak(name, 0.01) is None


def test_the_generic_build_has_no_peaks():
    with isa.forced("generic"):
        assert _C.isa_peak_instructions() == []
        assert all(_C.isa_peak(name, 0.01) is None for name in NAMES)
        assert _C.linear_instruction("float32") is None


def test_unknown_names_and_durations_raise():
    with pytest.raises(ValueError, match="vfmadd231ps.*vpmaddwd.*vpdpbusd.*got 'vfmadd'"):
        _C.isa_peak("vfmadd")
    with pytest.raises(ValueError, match="seconds"):
        _C.isa_peak("vfmadd231ps", 0.0)
    with pytest.raises(ValueError, match="dtype"):
        _C.linear_instruction("float16")
    with pytest.raises(ValueError, match="m, k: expected positive sizes, got 0, 768"):
        _C.linear_instruction("int8", m=0)


def rate_and_peaks(dtype: str, m: int, instruction: str) -> tuple[float, list[float]]:
    """The best call's rate (2·m·k·n per second) of a 768 × 1024 projection, and three peaks
    of the instruction measured between the calls (the machine may be shared)."""
    k, n = 768, 1024
    rng = np.random.default_rng(0)
    layer = _C.Linear(rng.standard_normal((k, n)).astype(np.float32), None, dtype)
    x, out = rng.standard_normal((m, k)).astype(np.float32), np.empty((m, n), np.float32)
    peaks, best = [], math.inf
    for _ in range(3):
        peaks.append(_C.isa_peak(instruction, 0.05))
        for _ in range(30):
            started = time.perf_counter()
            layer.forward(x, out)
            best = min(best, time.perf_counter() - started)
    return 2 * m * k * n / best, peaks


@needs_fma
def test_the_projection_does_not_outrun_the_peak():
    # float32 at m = 32 is FMA-bound: its rate (2·m·k·n) above the probe's (2 per FMA lane)
    # means one of them is mis-counted. The best call against the best peak of three, with
    # 30 % of slack for the noise that remains.
    rate, peaks = rate_and_peaks("float32", 32, "vfmadd231ps")
    assert rate <= 1.3 * max(peaks), (rate / 1e9, [p / 1e9 for p in peaks])


@needs_amx
def test_int8_rows_in_full_tiles_are_held_against_tdpbusd():
    assert _C.linear_instruction("int8", m=32, k=768) == "tdpbusd"
    assert _C.linear_instruction("int8", m=8, k=768) == "vpdpbusd"  # no full tile of 16 rows
    assert _C.linear_instruction("int8", m=32, k=100) == "vpdpbusd"  # k4 = 25: no whole tiles
    assert _C.linear_instruction("float32", m=32) == "vfmadd231ps"


@needs_amx
def test_the_int8_projection_does_not_outrun_the_tdpbusd_peak():
    # As above for AMX: tdpbusd counted at 2 · 16 · 16 · 64 operations, the projection at
    # 2·m·k·n; the tile loop holds no memory operand, so the projection stays below it.
    rate, peaks = rate_and_peaks("int8", 64, "tdpbusd")
    assert rate <= 1.3 * max(peaks), (rate / 1e9, [p / 1e9 for p in peaks])
    assert max(peaks) > _C.isa_peak("vpdpbusd", 0.05)  # 256 u8 · s8 products a cycle against 128
