"""What every script in benchmarks/ shares: the --quick / --json / --csv / --plot flags,
timing by the median of repeated runs, the machine description, and a measured fp32 GEMM
peak for the share-of-roofline column.

JSON: {"machine": {...}, "records": [{"bench", "system", "params", "value", "unit"}]}; the
CSV has one row per record, the charts come from report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def parser(doc: str) -> argparse.ArgumentParser:
    """The script's flags; --help shows its whole docstring."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a reduced set of the same comparisons (< 60 s)")
    p.add_argument("--json", metavar="PATH", help="write the raw measurements here (and a CSV of them beside it)")
    p.add_argument("--csv", metavar="PATH", help="write the measurements as CSV here (default: beside --json)")
    p.add_argument("--plot", metavar="DIR", help="write PNG charts of the measurements into DIR (needs matplotlib)")
    p.add_argument("--threads", type=int, default=2, help="threads for every system (default 2)")
    return p


def median_seconds(fn, repeats: int, min_seconds: float = 0.0) -> float:
    """Median wall time of fn() over `repeats` runs (more while under min_seconds), after one warm-up."""
    fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict, rounds: int, block_seconds: float) -> dict:
    """Median wall time of each fn in fns. Each round runs every fn for a block of about
    block_seconds (after one untimed call), so that a slow spell of the machine hits all
    alike, while the thread pools of different runtimes, which keep spinning for a while
    after their last call, do not steal cores from each other on every call."""
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            started = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                if t0 - started >= block_seconds:
                    break
    return {name: statistics.median(values) for name, values in times.items()}


def gemm_peak_flops(threads: int, size: int = 2048) -> float | None:
    """fp32 FLOP/s of a large square numpy matmul (OpenBLAS, a tuned GEMM) on `threads`
    threads: this machine's practical peak for that thread count. None without threadpoolctl,
    which alone sets numpy's BLAS threads once numpy is loaded (at its own count, all the
    cores or one, the figure was no peak for `threads`: shares of it came out above 100 %)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("fp32 GEMM peak: skipped (threadpoolctl is not installed: numpy's BLAS threads cannot be set)")
        return None
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    with threadpool_limits(threads, user_api="blas"):
        a @ a
        # The best of several runs: a peak, and one run slowed by a neighbour must not lower it.
        seconds = min(timeit.repeat(lambda: a @ a, number=1, repeat=10))
    return 2 * size**3 / seconds


def peak_share(flops_per_second: float, peak: float | None) -> str:
    """"42.0%" of the measured GEMM peak, or "-" where none was measured."""
    return f"{100 * flops_per_second / peak:.1f}%" if peak else "-"


def describe_peak(peak: float | None, threads: int, records: "Records") -> str:
    """The peak's line for the printed header; kept in the JSON's machine description."""
    if peak is None:
        return "fp32 GEMM peak: not measured"
    records.machine["gemm_fp32_peak_gflops"] = peak / 1e9
    return f"fp32 GEMM peak (numpy matmul 2048², {threads} threads): {peak / 1e9:.0f} GFLOP/s"


def read_bandwidth(threads: int, megabytes: int = 512) -> float:
    """Bytes/s of summing a float32 array much larger than the caches, split over `threads`
    (numpy releases the GIL inside the sum): the best of 5, this machine's read bandwidth."""
    from concurrent.futures import ThreadPoolExecutor

    data = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    parts = np.array_split(data, threads)
    with ThreadPoolExecutor(threads) as pool:
        def read() -> None:
            list(pool.map(np.sum, parts))
        read()
        seconds = min(timeit.repeat(read, number=1, repeat=5))
    return data.nbytes / seconds


def machine(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version()}


@dataclass
class Records:
    machine: dict
    records: list = field(default_factory=list)

    def add(self, bench: str, system: str, params: dict, value: float, unit: str) -> None:
        self.records.append({"bench": bench, "system": system, "params": params, "value": value, "unit": unit})

    def save(self, args: argparse.Namespace) -> None:
        """Writes what the flags ask for: --json, the CSV (--csv, else beside --json), --plot."""
        import report

        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": self.machine, "records": self.records}, f, indent=2)
            print(f"wrote {args.json}")
        csv_path = args.csv or (str(Path(args.json).with_suffix(".csv")) if args.json else None)
        if csv_path:
            print(f"wrote {report.write_csv(self.records, csv_path)}")
        if args.plot:
            for path in report.plot(self.records, args.plot):
                print(f"wrote {path}")
