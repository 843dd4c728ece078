"""llama.cpp as a peer in benchmarks/text.py: its `llama-batched-bench` on the GPT-2-small GGUF files
(not named llama_cpp: that is llama-cpp-python's import name, which this file would shadow).

The folder is what benchmarks/llama/build_llama.sh writes (AIGC_LLAMA_DIR, or text.py's
--llama-dir): build/bin/llama-batched-bench and gguf/gpt2-small-random-{f32,bf16,q8_0}.gguf.
Tokens/s mean what they mean in text.py: batch × new tokens / wall time of prompt + generation,
i.e. pl·tg / t of each JSONL row (t = t_pp + t_tg; its own `speed` also counts prompt tokens).
What still differs: llama-batched-bench feeds random tokens (no sampler, no detokenising) and
decodes tg steps after the prompt (text.py's systems: the prompt, then tg − 1 steps).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path

GGUF_TYPES = ("f32", "bf16", "q8_0")
ENV_VAR = "AIGC_LLAMA_DIR"
BENCH_BINARY = Path("build/bin/llama-batched-bench")
README_HINT = "see README 'llama.cpp as a peer'"


def gguf_path(root: Path, gguf_type: str) -> Path:
    return root / "gguf" / f"gpt2-small-random-{gguf_type}.gguf"


def missing(root: Path | None) -> str | None:
    """Why the peer cannot run from `root` (None when it can)."""
    if root is None:
        return f"{ENV_VAR} not set"
    if not (root / BENCH_BINARY).is_file():
        return f"no {BENCH_BINARY} under {root}"
    absent = [t for t in GGUF_TYPES if not gguf_path(root, t).is_file()]
    return f"no {', '.join(absent)} GGUF under {root / 'gguf'}" if absent else None


def command(root: Path, gguf_type: str, threads: int, prompt: int, new_tokens: int,
            batches: tuple[int, ...], repack: bool = True) -> list[str]:
    """Every batch in one process, CPU only, one context holding all sequences at full length
    (batched-bench splits it evenly between max(batches) sequences and skips a row that does not fit);
    -b 2048 takes batch 32's 1024 prompt tokens in one decode call (llama.cpp's defaults, spelled out).
    repack=False: --no-repack, ggml's weights as stored (see measure)."""
    return [str(root / BENCH_BINARY), "-m", str(gguf_path(root, gguf_type)),
            "-c", str(max(batches) * (prompt + new_tokens)), "-b", "2048", "-ub", "512",
            "-npp", str(prompt), "-ntg", str(new_tokens), "-npl", ",".join(map(str, batches)),
            "-t", str(threads), "-tb", str(threads), "-ngl", "0", "--output-format", "jsonl",
            *([] if repack else ["--no-repack"])]


def parse_jsonl(text: str) -> dict[int, float]:
    """{batch: tokens/s} from llama-batched-bench's output: new tokens (pl·tg) over t_pp + t_tg.
    Other lines (its log, llama_perf's summary) are skipped."""
    rates = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"pl"' in line:
            row = json.loads(line)
            rates[row["pl"]] = row["pl"] * row["tg"] / (row["t_pp"] + row["t_tg"])
    return rates


def measure(root: Path | None, threads: int, prompt: int, new_tokens: int, batches: tuple[int, ...],
            repeats: int) -> tuple[dict[str, dict[int, float]] | None, str]:
    """({GGUF type: {batch: tokens/s}}, median of `repeats` runs) and a one-line note; None and
    "llama.cpp: skipped (why; ...)" when the build is absent or a run fails."""
    reason = missing(root)
    if reason:
        return None, f"llama.cpp: skipped ({reason}; {README_HINT})"
    results, unrepacked = {}, []
    for gguf_type in GGUF_TYPES:
        runs, repack = [], True
        while len(runs) < repeats:
            done = subprocess.run(command(root, gguf_type, threads, prompt, new_tokens, batches, repack),
                                  capture_output=True, text=True)
            rates = parse_jsonl(done.stdout + done.stderr)
            if done.returncode < 0 and repack:
                # On an AMX Xeon (2026-12-04) Q8_0 died of SIGSEGV in ggml's repacked (AMX) weights
                # and ran without them: measure that, and say so.
                repack = False
                unrepacked.append(f"{gguf_type} with --no-repack (repacked: signal {-done.returncode})")
                continue
            if done.returncode != 0 or set(rates) != set(batches):
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                return None, f"llama.cpp: skipped ({gguf_type}: exit {done.returncode}, {tail}; {README_HINT})"
            runs.append(rates)
        results[gguf_type] = {b: statistics.median(r[b] for r in runs) for b in batches}
    return results, f"llama.cpp: {root / BENCH_BINARY}, median of {repeats}" + "".join(f"; {u}" for u in unrepacked)


def llama_dir(flag: str | None) -> Path | None:
    """The build folder: the flag, else AIGC_LLAMA_DIR, else None."""
    value = flag or os.environ.get(ENV_VAR)
    return Path(value) if value else None


def add_rows(records, model: str, root: Path | None, threads: int, prompt: int, new_tokens: int,
             batches: tuple[int, ...], repeats: int) -> None:
    """Measures, prints text.py's rows (llama.cpp-f32, -bf16, -q8_0; ratios over hf-generate of the
    same model, from the records) and records them."""
    results, note = measure(root, threads, prompt, new_tokens, batches, repeats)
    print(f"  {note}", flush=True)
    if results is None:
        return
    hf = {r["params"]["batch"]: r["value"] for r in records.records
          if r["bench"] == "text" and r["system"] == "hf-generate" and r["params"]["model"] == model}
    for batch in batches:
        for gguf_type, rates in results.items():
            system, rate = f"llama.cpp-{gguf_type}", rates[batch]
            records.add("text", system, {"model": model, "batch": batch, "prompt": prompt,
                                         "new_tokens": new_tokens, "threads": threads}, rate, "tokens/s")
            ratio = f"{rate / hf[batch]:.2f}x" if batch in hf else "-"
            print(f"{model:<11} {batch:>5} {system:<20} {rate:>9.1f} {ratio:>7} {'-':>9}", flush=True)
