"""Benchmark records → CSV rows and PNG charts, shared by every script in benchmarks/ (their
--csv and --plot) and by readme_tables.py.

Input is what each script's --json writes: {"machine": {...}, "records": [{"bench", "system",
"params", "value", "unit"}, ...]}. Charts: throughput (tokens/s, images/s, requests/s)
against batch or clients, one line per system; latency percentiles against clients, one line
per percentile; and the kernels' ratios, one bar per (kernel, shape, baseline): baseline
time / aigc_engine's time, so above 1 is faster. matplotlib draws them (the `plot` extra).
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

THROUGHPUT_UNITS = ("tokens/s", "images/s", "requests/s")
LATENCY_UNIT = re.compile(r"^(?P<what>.+) p(?P<percentile>\d+) s$")  # serve.py: "ttft p50 s", "latency p99 s"
# x axis → params that follow it (serve.py's request count is clients × requests per client)
X_AXES = {"batch": (), "clients": ("requests",)}
TIME_UNITS = {"ms": 1e-3, "s": 1.0}
OURS = "aigc"  # systems whose name starts with it are aigc_engine's


def read(path: str | Path) -> dict:
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise ValueError(f"{path}: not a benchmark JSON (expected an object with a 'records' list)")
    return doc


def csv_rows(records: list[dict]) -> list[dict]:
    """One row per record: bench, system, each parameter (in first-seen order), value, unit."""
    names = list(dict.fromkeys(name for r in records for name in r["params"]))
    return [{"bench": r["bench"], "system": r["system"], **{n: r["params"].get(n, "") for n in names},
             "value": r["value"], "unit": r["unit"]} for r in records]


def write_csv(records: list[dict], path: str | Path) -> Path:
    rows = csv_rows(records)
    columns = list(rows[0]) if rows else ["bench", "system", "value", "unit"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


@dataclass
class Chart:
    """One PNG: lines (x, y) per label, or bars (label, height) when kind is "bars"."""
    name: str
    title: str
    xlabel: str
    ylabel: str
    kind: str = "lines"
    series: dict[str, list[tuple]] = field(default_factory=dict)


def _describe(params: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items())


def _slug(*parts) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(map(str, parts)).lower()).strip("-")


def _line_charts(records: list[dict]) -> list[Chart]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        x = next((name for name in X_AXES if name in r["params"]), None)
        latency = LATENCY_UNIT.match(r["unit"])
        if x is None or not (r["unit"] in THROUGHPUT_UNITS or latency):
            continue
        rest = {k: v for k, v in r["params"].items() if k != x and k not in X_AXES[x]}
        kind = "latency" if latency else r["unit"]
        groups[(r["bench"], x, kind, json.dumps(rest))].append(r)
    charts = []
    for (bench, x, kind, rest), members in groups.items():
        if len({r["params"][x] for r in members}) < 2:
            continue  # one point is no line
        series: dict[str, list[tuple]] = defaultdict(list)
        for r in members:
            label = f"{r['system']}: {r['unit'][:-2]}" if kind == "latency" else r["system"]
            series[label].append((r["params"][x], r["value"]))
        rest = json.loads(rest)
        what = "latency percentiles" if kind == "latency" else kind
        name = _slug(bench, what, "by", x, *(f"{k} {v}" for k, v in rest.items()))
        charts.append(Chart(name, f"{bench}: {what} against {x}\n{_describe(rest)}", x,
                            "seconds" if kind == "latency" else kind, series={k: sorted(v) for k, v in series.items()}))
    return charts


def kernel_ratios(records: list[dict]) -> list[dict]:
    """Each baseline's time over each aigc_engine system's time for the same kernel and shape
    (a rate unit such as GFLOP/s is inverted): above 1, aigc_engine is faster. Only time and
    FLOP-rate units take part: tokens/s and images/s belong to the line charts."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["unit"] in TIME_UNITS or r["unit"] == "GFLOP/s":
            groups[(r["bench"], r["unit"], json.dumps(r["params"]))].append(r)
    ratios = []
    for (bench, unit, params), members in groups.items():
        ours = [r for r in members if r["system"].startswith(OURS)]
        peers = [r for r in members if not r["system"].startswith(OURS)]
        for mine in ours:
            for peer in peers:
                faster = (peer["value"] / mine["value"] if unit in TIME_UNITS else mine["value"] / peer["value"])
                ratios.append({"bench": bench, "params": json.loads(params), "system": mine["system"],
                               "baseline": peer["system"], "ours": mine["value"], "theirs": peer["value"],
                               "unit": unit, "ratio": faster})
    return ratios


def charts(records: list[dict]) -> list[Chart]:
    found = _line_charts(records)
    ratios = kernel_ratios(records)
    if ratios:
        bars = {f"{r['bench']} ({_describe(r['params'])})\n{r['system']} vs {r['baseline']}": r["ratio"]
                for r in ratios}
        found.append(Chart("kernel-ratios", "kernels: baseline time / aigc_engine time (> 1: aigc_engine is faster)",
                           "", "ratio", "bars", {"ratio": list(bars.items())}))
    return found


def plot(records: list[dict], folder: str | Path) -> list[Path]:
    """Writes each chart as FOLDER/NAME.png; returns the paths."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'aigc-engine[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in charts(records):
        if chart.kind == "bars":
            (bars,) = chart.series.values()
            fig, ax = plt.subplots(figsize=(9, 1.0 + 0.45 * len(bars)))
            ax.barh([label for label, _ in bars], [height for _, height in bars])
            ax.axvline(1.0, color="grey", linewidth=0.8)
            ax.invert_yaxis()
            ax.tick_params(axis="y", labelsize=7)
            ax.set_xlabel(chart.ylabel)
        else:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for label, points in chart.series.items():
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
            ax.set_xscale("log", base=2)
            xs = sorted({x for points in chart.series.values() for x, _ in points})
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel(chart.xlabel)
            ax.set_ylabel(chart.ylabel)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        ax.set_title(chart.title, fontsize=9)
        fig.tight_layout()
        path = folder / f"{chart.name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
