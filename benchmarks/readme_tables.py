"""README's benchmark tables, in markdown, from the JSON files the benchmarks write (--json):
images.py's, text.py's (one table per model), serve.py's and native_kernels.py's, in the README's
layout. Prints them; with --readme FILE, also replaces each table of FILE that sits between
`<!-- bench-table KEY -->` and `<!-- /bench-table -->` by the one made for KEY (images,
text MODEL, serve, kernels).

    python benchmarks/readme_tables.py images.json text.json serve.json [--readme README.md]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

TEXT_SYSTEMS = {  # text.py's system → its row in the README, in the README's order
    "hf-generate": "Hugging Face `generate` (PyTorch eager)",
    "onnxruntime-fp32": "onnxruntime, fp32 (plain KV-cache loop)",
    "onnxruntime-int8": "onnxruntime, int8 (`quantize_dynamic`, last position, head quantized)",
    "ctranslate2-float32": "CTranslate2, float32",
    "ctranslate2-int8": "CTranslate2, int8",
    "llama.cpp-f32": "llama.cpp, f32 (GGUF, `llama-batched-bench`)",
    "llama.cpp-bf16": "llama.cpp, bf16 (GGUF)",
    "llama.cpp-q8_0": "llama.cpp, Q8_0 (GGUF)",
    "aigc-onnxruntime": "aigc_engine, onnxruntime backend",
    "aigc-native-float32": "**aigc_engine native, float32**",
    "aigc-native-bfloat16": "**aigc_engine native, bf16**",
    "aigc-native-int8": "**aigc_engine native, int8**",
    "aigc-native-bfloat16-kv-bf16": "**aigc_engine native, bf16, KV cache bf16**",
    "aigc-native-int8-kv-bf16": "**aigc_engine native, int8, KV cache bf16**",
}
SERVED, IN_PROCESS = "aigc serve (HTTP, streamed)", "TextGenerator.generate (in-process)"


def rate(value: float) -> str:
    """Three significant figures below 100 (36.8), whole numbers with thousands commas above (2,264)."""
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}×" if ours and theirs else "—"


def markdown(header: list[str], rows: list[list[str]], align: str = "---") -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([align] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def images_table(records: list[dict]) -> str:
    by_key: dict[tuple, dict] = defaultdict(dict)
    for r in records:
        by_key[(r["params"]["model"], r["params"]["batch"])][r["system"]] = r["value"]
    rows = []
    for (model, batch), rates in sorted(by_key.items()):
        ours, torch, ort = rates.get("aigc_engine"), rates.get("pytorch-eager"), rates.get("onnxruntime")
        rows.append([model, str(batch)] + [rate(v) if v else "—" for v in (torch, ort, ours)] +
                    [ratio(ours, torch), ratio(ours, ort)])
    return markdown(["model", "batch", "PyTorch eager", "onnxruntime", "aigc_engine", "vs torch", "vs onnxruntime"],
                    rows)


def text_tables(records: list[dict]) -> dict[str, str]:
    """One table per model: a row per system, a column per batch, ratios over Hugging Face."""
    tables = {}
    for model in dict.fromkeys(r["params"]["model"] for r in records):
        mine = [r for r in records if r["params"]["model"] == model]
        batches = sorted({r["params"]["batch"] for r in mine})
        values = {(r["system"], r["params"]["batch"]): r["value"] for r in mine}
        systems = sorted({r["system"] for r in mine}, key=lambda s: (list(TEXT_SYSTEMS).index(s)
                                                                     if s in TEXT_SYSTEMS else len(TEXT_SYSTEMS), s))
        rows = []
        for system in systems:
            cells = []
            for batch in batches:
                value, base = values.get((system, batch)), values.get(("hf-generate", batch))
                cells.append("—" if value is None else rate(value) + (f" ({value / base:.2f}×)" if base else ""))
            rows.append([TEXT_SYSTEMS.get(system, system)] + cells)
        tables[f"text {model}"] = markdown(["system"] + [f"batch {b}" for b in batches], rows)
    return tables


def serve_table(records: list[dict]) -> str:
    by_clients: dict[int, dict] = defaultdict(dict)
    for r in records:
        key = "in-process tokens/s" if r["system"] == IN_PROCESS else r["unit"]
        by_clients[r["params"]["clients"]][key] = r["value"]
        by_clients[r["params"]["clients"]]["requests"] = r["params"]["requests"]
    rows = []
    for clients, v in sorted(by_clients.items()):
        rows.append([str(clients), str(v["requests"]), f"{v['requests/s']:.1f}", f"{v['tokens/s']:,.0f}",
                     f"{v['in-process tokens/s']:,.0f}", f"{v['tokens/s'] / v['in-process tokens/s']:.2f}",
                     f"{v['ttft p50 s'] * 1e3:.0f} ms", f"{v['ttft p99 s'] * 1e3:.0f} ms",
                     f"{v['latency p50 s']:.2f} s", f"{v['latency p99 s']:.2f} s", f"{v['failed requests']:.0f}"])
    return markdown(["clients", "requests", "req/s", "tok/s", "in-process tok/s", "ratio", "TTFT p50", "TTFT p99",
                     "latency p50", "latency p99", "failed"], rows, "---:")


def kernels_table(records: list[dict]) -> str:
    rows = [[r["bench"], ", ".join(f"{k} {v}" for k, v in r["params"].items()),
             f"{r['system']} {r['ours']:.3g} {r['unit']}", f"{r['baseline']} {r['theirs']:.3g} {r['unit']}",
             f"{r['ratio']:.2f}×"] for r in report.kernel_ratios(records)]
    return markdown(["kernel", "shape", "aigc_engine", "baseline", "ratio"], rows)


def tables(records: list[dict]) -> dict[str, str]:
    """KEY → markdown table, for each kind of benchmark among the records."""
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_bench[r["bench"]].append(r)
    found = {}
    if by_bench.get("images"):
        found["images"] = images_table(by_bench["images"])
    if by_bench.get("text"):
        found.update(text_tables(by_bench["text"]))
    if by_bench.get("serve"):
        found["serve"] = serve_table(by_bench["serve"])
    if report.kernel_ratios(records):
        found["kernels"] = kernels_table(records)
    return found


def replace_tables(readme: str, made: dict[str, str]) -> tuple[str, list[str]]:
    """README text with each marked table whose KEY was made replaced; and the keys replaced."""
    replaced = []

    def swap(match: re.Match) -> str:
        key = match.group("key")
        if key not in made:
            return match.group(0)
        replaced.append(key)
        return f"{match.group('open')}\n{made[key]}\n{match.group('close')}"
    pattern = r"(?P<open><!-- bench-table (?P<key>[^>]+?) -->)\n.*?(?P<close><!-- /bench-table -->)"
    return re.sub(pattern, swap, readme, flags=re.DOTALL), replaced


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="+", help="files the benchmarks wrote with --json")
    p.add_argument("--readme", help="replace the marked tables of this file in place")
    args = p.parse_args(argv)
    records = [r for path in args.json for r in report.read(path)["records"]]
    made = tables(records)
    if not made:
        sys.exit("no images, text, serve or kernels records in " + ", ".join(args.json))
    for key, table in made.items():
        print(f"<!-- bench-table {key} -->\n{table}\n<!-- /bench-table -->\n")
    if args.readme:
        readme = Path(args.readme)
        text, replaced = replace_tables(readme.read_text(), made)
        readme.write_text(text)
        missing = [key for key in made if key not in replaced]
        print(f"{args.readme}: replaced {', '.join(replaced) or 'nothing'}"
              + (f"; no marked table for {', '.join(missing)}" if missing else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
