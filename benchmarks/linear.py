"""The decoder's projections (own kernels, _C.Linear.forward with blas=False) at GPT-2-small shapes.

m = 1 (one sequence decoding): GB/s of weight bytes, hot (the same layer again: from L3
when it fits) and cold (a round of copies totalling >= 256 MB, as a decode step reads its
layers), against the machine's read bandwidth.
m = 8, 32, 64, 512 (batched decoding up to prefill): GOP/s (2·m·k·n per second) and the
roofline, the share of the peak of the instruction the dtype's kernel multiply-adds with,
measured in the same run on every thread (_C.isa_peak: a register-only loop of that
instruction, ops counted alike: 2 per multiply-add lane): float32 against the FMA peak
(vfmadd231ps), bfloat16 too (its weights are widened to float32 in registers, then FMA),
int8 against vpmaddwd (avx2), vpdpbusd (AVX-512 VNNI) or, where the CPU has AMX-INT8 and m
fills a tile of 16 rows, tdpbusd (the rows past the last full tile run in vpdpbusd).
m = 32 is also timed cold (a round of copies: weights from memory, as a batch-32 decode
step reads them): a kernel can gain hot and lose cold. numpy's float32 matmul (OpenBLAS)
at m = 32 is an extra reference column, no roofline. --quick: two shapes, m = 1, 32, 512.
--lstm adds the pycode LSTM's projection shapes (k 256 and 384 to n 1536, and 384 × 4096).

The projections are timed as the decoder runs them: one after another with the pool's
workers awake (_C.workers_awake(), as inside a decode step), not woken from sleep for every
call, which alone made a hot 768 × 3072 int8 projection at m = 1 take three times as long.

    python -P benchmarks/linear.py [--quick] [--lstm] [--json results.json] [--threads 2]
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Records, machine, median_seconds, parser, read_bandwidth  # noqa: E402

SHAPES = ((768, 2304), (768, 3072), (3072, 768), (768, 50257))  # c_attn, c_fc, c_proj (mlp), lm_head
LSTM_SHAPES = ((256, 1536), (384, 1536), (384, 4096))
BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}
COLD_BYTES = 256 * 2**20
BATCHED = (8, 32, 64, 512)
COLD_BATCH = 32  # also timed cold: a batch-32 decode step's weights come from memory
WIDTH = {"avx2": "ymm", "avx512": "zmm"}


def measure_peaks(_C, threads: int, seconds: float, records: Records) -> dict[str, float]:
    """Ops/s of each instruction the projections use on the active ISA, on every pool thread."""
    isa = _C.active_isa()
    peaks = {}
    for name in _C.isa_peak_instructions():
        peaks[name] = _C.isa_peak(name, seconds)
        records.machine[f"peak_{name}_gops"] = peaks[name] / 1e9
        records.add("linear", f"peak {name}", {"isa": isa, "threads": threads}, peaks[name] / 1e9, "GOP/s")
        print(f"{name} peak ({isa} {WIDTH.get(isa, '')}, {threads} threads): {peaks[name] / 1e9:.0f} GOP/s "
              f"({peaks[name] / threads / 1e9:.0f} per thread)")
    for dtype in BYTES:
        used = _C.linear_instruction(dtype)
        why = " (weights widened to float32 in registers)" if dtype == "bfloat16" and used else ""
        tiled = _C.linear_instruction(dtype, m=16)
        if tiled != used:
            why += f"; from m = 16, {tiled} (AMX, rows in tiles of 16; the rest of the rows {used})"
        print(f"  {dtype} projections held against: {used or 'none (no single instruction on this ISA)'}{why}")
    records.machine["isa"] = isa
    return peaks


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--lstm", action="store_true", help="also the pycode LSTM's projection shapes")
    args = p.parse_args()
    os.environ["AIGC_NUM_THREADS"] = str(args.threads)
    from aigc_engine import _C

    records = Records(machine(args.threads))
    repeats, min_seconds = (3, 0.1) if args.quick else (9, 0.5)
    shapes = SHAPES[1:3] if args.quick else SHAPES
    shapes += LSTM_SHAPES if args.lstm else ()
    batched = (32, 512) if args.quick else BATCHED
    peaks = measure_peaks(_C, args.threads, 0.15 if args.quick else 0.4, records)
    one, split = read_bandwidth(1, 512), read_bandwidth(args.threads, 512)
    records.machine.update(read_one_thread_gbs=one / 1e9, read_split_gbs=split / 1e9)
    print(f"read bandwidth (numpy sum, 512 MB): {one / 1e9:.1f} GB/s one thread, "
          f"{split / 1e9:.1f} GB/s split over {args.threads} threads")
    rng = np.random.default_rng(0)
    for k, n in shapes:
        w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        xs = {m: rng.standard_normal((m, k)).astype(np.float32) for m in (1, *batched)}
        numpy_s = {m: median_seconds(lambda m=m: xs[m] @ w, repeats, min_seconds) for m in (1, 32)}
        numpy_rate = 2 * 32 * k * n / numpy_s[32] / 1e9
        records.add("linear", "numpy float32", {"k": k, "n": n, "m": 32}, numpy_rate, "GFLOP/s")
        print(f"\nk={k} n={n}   numpy float32 matmul: m=1 {k * n * 4 / numpy_s[1] / 1e9:.1f} GB/s, "
              f"m=32 {numpy_rate:.1f} GFLOP/s")
        with _C.workers_awake():
            measure_dtypes(_C, w, b, xs, batched, peaks, numpy_rate, split, records, repeats, min_seconds)
    records.save(args)


def measure_dtypes(_C, w, b, xs, batched, peaks, numpy_rate, split, records, repeats, min_seconds) -> None:
    """One shape in every dtype: m = 1 hot and cold, then the batched rows against their peak."""
    k, n = w.shape
    for dtype, size in BYTES.items():
        layer = _C.Linear(w, b, dtype)
        weight_bytes = k * n * size
        out = {m: np.empty((m, n), np.float32) for m in xs}
        hot = median_seconds(lambda: layer.forward(xs[1], out[1], blas=False), repeats, min_seconds)
        copies = [layer] + [_C.Linear(w, b, dtype) for _ in range(-(-COLD_BYTES // weight_bytes) - 1)]

        def cold(m: int) -> float:
            def round_of_copies() -> None:
                for copy in copies:
                    copy.forward(xs[m], out[m], blas=False)
            return median_seconds(round_of_copies, max(3, repeats // 3), min_seconds) / len(copies)
        cold_s, cold_batch_s = cold(1), cold(COLD_BATCH)
        copies.clear()  # frees the copies
        print(f"  {dtype:9} m=1 {weight_bytes / hot / 1e9:6.1f} GB/s hot {weight_bytes / cold_s / 1e9:6.1f} cold "
              f"({weight_bytes / cold_s / split:.2f}x read)")
        for where, seconds in (("hot", hot), ("cold", cold_s)):
            records.add("linear", f"aigc {dtype}", {"k": k, "n": n, "m": 1, "weights": where},
                        weight_bytes / seconds / 1e9, "GB/s")
        line = f"  {'':9}"
        held = []
        for m in batched:
            instruction = _C.linear_instruction(dtype, m=m, k=k)
            peak = peaks.get(instruction)
            if peak and instruction not in held:
                held.append(instruction)
            seconds = median_seconds(lambda m=m: layer.forward(xs[m], out[m], blas=False), repeats, min_seconds)
            rate = 2 * m * k * n / seconds / 1e9
            records.add("linear", f"aigc {dtype}", {"k": k, "n": n, "m": m}, rate, "GOP/s")
            line += f" m={m} {rate:6.1f} GOP/s"
            if peak:
                share = 100 * rate * 1e9 / peak
                records.add("linear", f"aigc {dtype}", {"k": k, "n": n, "m": m, "peak": instruction}, share,
                            "% of peak")
                line += f" {share:3.0f}%"
            if m == COLD_BATCH:
                cold_rate = 2 * m * k * n / cold_batch_s / 1e9
                records.add("linear", f"aigc {dtype}", {"k": k, "n": n, "m": m, "weights": "cold"}, cold_rate, "GOP/s")
                line += f" ({rate / numpy_rate:.2f}x numpy; cold {cold_rate:.0f} GOP/s)"
        print(line + (f"   (% of the {' / '.join(held)} peak)" if held else ""))


if __name__ == "__main__":
    main()
