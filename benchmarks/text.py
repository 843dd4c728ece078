"""Tokens/s of text generation: Hugging Face `generate`, stock onnxruntime (fp32, int8),
CTranslate2 (fp32, int8) and aigc_engine (native fp32 / bf16 / int8, bf16 and int8 again
with a bf16 KV cache, and its onnxruntime backend), side by side on the same weights.

Tokens/s = batch × new tokens / wall time of the whole call: prompt 32 tokens, 128 new
tokens (greedy, no early stop), batch 1, 8 and 32, the same thread count everywhere; the
median of 3 rounds in which every system makes one call in turn. Two
models: the shipped pycode-gpt, and a GPT-2-small-shaped model (124M, random init) saved
in Hugging Face format (every system loads the same weights; aigc_engine's file comes
from `aigc import-hf`). At batch 1 the last column is the share of the memory-bandwidth
roofline: tokens/s × weight bytes read per token / the read bandwidth measured here.
Ratios are over Hugging Face. On GPT-2-small, llama.cpp too where it is built (GGUF f32,
bf16, Q8_0 of the same folder, timed by its llama-batched-bench; --llama-dir or
AIGC_LLAMA_DIR, see benchmarks/llama_cpp_peer.py), else a line saying it was skipped.

Every system runs in a spawned worker process of its own (text_workers.py), loaded once
per model; the parent sends each call and gets back its wall time, measured in the worker.
Only the Hugging Face worker imports torch (the others check that they have not: in one
process with it, CTranslate2 float32 ran about a third slower), and model files are built
beforehand in a process of their own (text_models.py: the Hugging Face copy, CTranslate2's
conversion). The onnxruntime int8 peer runs the graph a careful user quantizes
(ort_int8_graph.py): logits of the last position only, and the tied LM head as an
initializer of its own, which `quantize_dynamic` quantizes (as exported it stays float32).

    python benchmarks/text.py [--quick] [--json results.json] [--cache DIR]

--step measures only aigc_engine's native backend on pycode-gpt (batch 1 and 32, greedy,
no early stop): tokens/s and Python's share of the wall time (time outside the native
calls — _C.Generation.step, or on builds before it _C.GptModel.forward and
_C.Sampler.sample — over the whole call), and the part of it spent in Request.accept.
It runs on any build, so that builds can be compared by alternating runs:
PYTHONPATH=BUILD python benchmarks/text.py --step.

Where a CUDA device is visible (and this build has CUDA), a last table: decode tokens/s
of the native decoder on the GPU (float32, bf16) against onnxruntime-gpu's
CUDAExecutionProvider on the same graph (where installed), batch 1 and 32, ratios over
onnxruntime-gpu.

--lstm measures only the shipped pycode-lstm: aigc_engine's native LSTM (float32, bf16,
int8) against its onnxruntime backend (prompt 32, 128 new tokens, greedy, batch 1, 8 and
32), ratios over the onnxruntime backend; each again in a worker of its own.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Records, machine, parser, read_bandwidth  # noqa: E402
import llama_cpp_peer  # noqa: E402
import text_models as models  # noqa: E402
import text_peers as peers  # noqa: E402
import text_workers  # noqa: E402

PROMPT_TOKENS = 32
NEW_TOKENS = 128
BATCHES = (1, 8, 32)
SETTLE_SECONDS = 0.2  # the pause before each system's turn (seconds_of)


def aigc_specs(onnx_path: Path, max_batch: int, device: str = "cpu", kv_cache: bool = True) -> dict:
    """Worker specs {system: (factory, args, torch_allowed)} of aigc_engine: on the CPU its
    onnxruntime backend and the native one in float32, bf16 and int8, the last two also with
    their KV cache in bf16 where the model has one (kv_cache; llama.cpp's is f16 by default,
    CTranslate2's on a CPU float32); on CUDA the native one in float32 and bf16."""
    if device == "cuda":
        return {f"aigc-native-cuda-{dtype}": (peers.aigc_engine, (onnx_path, "native", dtype, max_batch, "cuda"), False)
                for dtype in ("float32", "bfloat16")}
    specs = {"aigc-onnxruntime": (peers.aigc_engine, (onnx_path, "onnxruntime", "float32", max_batch), False)}
    for dtype in ("float32", "bfloat16", "int8"):
        specs[f"aigc-native-{dtype}"] = (peers.aigc_engine, (onnx_path, "native", dtype, max_batch), False)
    for dtype in ("bfloat16", "int8") if kv_cache else ():
        specs[f"aigc-native-{dtype}-kv-bf16"] = (peers.aigc_engine, (onnx_path, "native", dtype, max_batch, "cpu",
                                                                     "bfloat16"), False)
    return specs


def system_specs(files: models.ModelFiles, threads: int, max_batch: int) -> dict:
    """Worker specs of every system on one model's files, in the order of the table."""
    specs = {}
    if files.hf:
        specs["hf-generate"] = (peers.hugging_face, (files.hf, threads), True)
    specs["onnxruntime-fp32"] = (peers.onnxruntime_plain, (files.onnx, threads), False)
    if files.ort_int8:
        specs["onnxruntime-int8"] = (peers.onnxruntime_plain, (files.ort_int8, threads), False)
    for compute_type, folder in files.ct2.items():
        specs[f"ctranslate2-{compute_type}"] = (peers.ctranslate2_generator, (folder, compute_type, threads), False)
    return specs | aigc_specs(files.onnx, max_batch)


@functools.cache
def prompt_ids(onnx_path: Path) -> list[int]:
    """argparse.py's source encoded by the tokenizer in onnx_path (no special tokens, as
    aigc_engine encodes a prompt)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(models.config_and_tokenizer(onnx_path)[1])
    text = Path(sysconfig.get_paths()["stdlib"], "argparse.py").read_text()
    return tokenizer.encode(text, add_special_tokens=False).ids


def prompts_for(batch: int, onnx_path: Path) -> list[list[int]]:
    """batch prompts of PROMPT_TOKENS tokens, consecutive stretches of argparse.py. For
    gpt2-small, pycode-gpt's file: gpt2-small carries the same tokenizer, padded with filler
    tokens that encoding never produces."""
    ids = prompt_ids(onnx_path)
    return [ids[i * PROMPT_TOKENS:(i + 1) * PROMPT_TOKENS] for i in range(batch)]


def seconds_of(workers: dict, prompts, new_tokens: int, repeats: int) -> dict[str, float]:
    """Median wall time of each system's call, timed in its worker. The systems take turns,
    one call each per round, so that a slow spell of the machine (a shared VM's bandwidth
    drifts by 10-30 % over minutes) weighs on all of them rather than on whichever ran then.
    Before each turn a pause lets the last system's thread pool go to sleep: Intel's OpenMP
    runtime keeps its threads spinning for KMP_BLOCKTIME, 200 ms by default, after a call."""
    for worker in workers.values():
        worker.seconds(prompts, 4)  # warm-up: sessions, caches, thread pools
    times = {system: [] for system in workers}
    for _ in range(repeats):
        for system, worker in workers.items():
            time.sleep(SETTLE_SECONDS)
            times[system].append(worker.seconds(prompts, new_tokens))
    return {system: sorted(t)[len(t) // 2] for system, t in times.items()}


def add_timing(owner, name: str, spent: list[float]) -> None:
    """Replaces owner.name by a wrapper that adds the seconds spent in it to spent[0]."""
    call = getattr(owner, name)

    def timed(*args):
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            spent[0] += time.perf_counter() - started
    setattr(owner, name, timed)


def timed_native_calls() -> list[float]:
    """Wraps the native entry points a decode step calls; the list's one element adds up
    the seconds spent inside them."""
    from aigc_engine import _C
    spent = [0.0]
    if hasattr(_C, "Generation"):
        add_timing(_C.Generation, "step", spent)
    else:  # builds before the native batch
        add_timing(_C.GptModel, "forward", spent)
        add_timing(_C.Sampler, "sample", spent)
    return spent


def timed_accept() -> list[float]:
    """Adds up the seconds of Request.accept (detokenizing, stop strings): Python's share
    that is the request's, not the scheduler's."""
    from aigc_engine.text.request import Request
    spent = [0.0]
    add_timing(Request, "accept", spent)
    return spent


def step_share(args, records: Records) -> None:
    from aigc_engine import SamplingParams, TextGenerator
    from aigc_engine.artifacts.registry import MODELS_DIR
    spent, accepting = timed_native_calls(), timed_accept()
    generator = TextGenerator.load("pycode-gpt", max_batch_size=32)
    new_tokens, repeats = (16, 3) if args.quick else (NEW_TOKENS, 5)
    print(f"{'batch':>5} {'tok/s':>9} {'ms/step':>8} {'python share':>13} {'of it accept':>13}")
    for batch in (1, 32):
        prompts = prompts_for(batch, MODELS_DIR / "pycode-gpt.onnx")
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        generator.generate(prompts, params)  # warm-up
        runs = []
        for _ in range(repeats):
            spent[0] = accepting[0] = 0.0
            started = time.perf_counter()
            generator.generate(prompts, params)
            wall = time.perf_counter() - started
            runs.append((wall, (wall - spent[0]) / wall, accepting[0] / wall))
        wall, share, accept_share = sorted(runs)[len(runs) // 2]
        config = {"model": "pycode-gpt", "batch": batch, "prompt": PROMPT_TOKENS, "new_tokens": new_tokens,
                  "threads": args.threads}
        records.add("text-step", "aigc-native-float32", config, batch * new_tokens / wall, "tokens/s")
        records.add("text-step-python-share", "aigc-native-float32", config, share, "ratio")
        records.add("text-step-accept-share", "aigc-native-float32", config, accept_share, "ratio")
        print(f"{batch:>5} {batch * new_tokens / wall:>9.1f} {1e3 * wall / new_tokens:>8.3f} {100 * share:>12.1f}% "
              f"{100 * accept_share:>12.1f}%", flush=True)


def lstm_native_vs_onnxruntime(args, records: Records) -> None:
    from aigc_engine.artifacts.registry import MODELS_DIR
    onnx_path = MODELS_DIR / "pycode-lstm.onnx"
    batches, new_tokens, repeats = ((1, 8), 16, 1) if args.quick else (BATCHES, NEW_TOKENS, 3)
    header = f"{'model':<11} {'batch':>5} {'system':<20} {'tok/s':>9} {'vs ort':>7}"
    with text_workers.workers(aigc_specs(onnx_path, max(batches), kv_cache=False), args.threads) as found:
        print(f"{header}\n{'-' * len(header)}", flush=True)
        for batch in batches:
            rates = tokens_per_second(found, batch, onnx_path, new_tokens, repeats)
            for system, rate in rates.items():
                records.add("text", system, {"model": "pycode-lstm", "batch": batch, "prompt": PROMPT_TOKENS,
                                             "new_tokens": new_tokens, "threads": args.threads}, rate, "tokens/s")
                print(f"{'pycode-lstm':<11} {batch:>5} {system:<20} {rate:>9.1f} "
                      f"{rate / rates['aigc-onnxruntime']:>6.2f}x", flush=True)


def tokens_per_second(found: dict, batch: int, onnx_path: Path, new_tokens: int, repeats: int) -> dict:
    """{system: tokens/s} of each worker's median call on `batch` prompts (prompts_for)."""
    seconds = seconds_of(found, prompts_for(batch, onnx_path), new_tokens, repeats)
    return {system: batch * new_tokens / median for system, median in seconds.items()}


def gpu_rows(args, records: Records, files: dict) -> None:
    """The CUDA decoder against onnxruntime-gpu, where a GPU is visible."""
    from aigc_engine import ops
    if not ops.cuda_available():
        print("\n  GPU rows: skipped (no CUDA device, or a CPU-only build)")
        return
    batches, new_tokens, repeats = ((1, 32), 16, 1) if args.quick else ((1, 32), NEW_TOKENS, 3)
    header = f"{'model':<11} {'batch':>5} {'system':<26} {'tok/s':>9} {'vs ort-gpu':>10}"
    for name, model in files.items():
        print(f"\n{header}\n{'-' * len(header)}", flush=True)
        specs = aigc_specs(model.onnx, max(batches), "cuda")
        specs["onnxruntime-gpu"] = (peers.onnxruntime_plain, (model.onnx, args.threads, "cuda"), False)
        with text_workers.workers(specs, args.threads) as found:
            for batch in batches:
                rates = tokens_per_second(found, batch, files["pycode-gpt"].onnx, new_tokens, repeats)
                for system, rate in rates.items():
                    records.add("text-gpu", system, {"model": name, "batch": batch, "prompt": PROMPT_TOKENS,
                                                     "new_tokens": new_tokens}, rate, "tokens/s")
                    ratio = f"{rate / rates['onnxruntime-gpu']:.2f}x" if "onnxruntime-gpu" in rates else "-"
                    print(f"{name:<11} {batch:>5} {system:<26} {rate:>9.1f} {ratio:>10}", flush=True)


def cpu_rows(args, records: Records, files: dict, bandwidth: float) -> None:
    """Every system on every model, each in its worker; the workers of one model are stopped
    before the next model's start."""
    batches, new_tokens, repeats = ((1, 8), 16, 1) if args.quick else (BATCHES, NEW_TOKENS, 3)
    header = f"{'model':<11} {'batch':>5} {'system':<28} {'tok/s':>9} {'vs HF':>7} {'roofline':>9}"
    for name, model in files.items():
        print(f"\n{header}\n{'-' * len(header)}", flush=True)
        with text_workers.workers(system_specs(model, args.threads, max(batches)), args.threads) as found:
            for batch in batches:
                rates = tokens_per_second(found, batch, files["pycode-gpt"].onnx, new_tokens, repeats)
                for system, rate in rates.items():
                    records.add("text", system, {"model": name, "batch": batch, "prompt": PROMPT_TOKENS,
                                                 "new_tokens": new_tokens, "threads": args.threads}, rate, "tokens/s")
                    ratio = f"{rate / rates['hf-generate']:.2f}x" if "hf-generate" in rates else "-"
                    weight_bytes = found[system].loaded["weight_bytes"]
                    roofline = f"{100 * rate * weight_bytes / bandwidth:.0f}%" if batch == 1 and weight_bytes else "-"
                    print(f"{name:<11} {batch:>5} {system:<28} {rate:>9.1f} {ratio:>7} {roofline:>9}", flush=True)
        if name == "gpt2-small":  # its own process, once the workers have stopped
            llama_cpp_peer.add_rows(records, name, llama_cpp_peer.llama_dir(args.llama_dir), args.threads,
                                    PROMPT_TOKENS, new_tokens, batches, repeats)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aigc-bench"),
                   help="where converted models live between runs")
    p.add_argument("--step", action="store_true", help="only the native step: tokens/s and Python's share")
    p.add_argument("--lstm", action="store_true", help="only pycode-lstm: the native LSTM against onnxruntime")
    p.add_argument("--llama-dir", help="the llama.cpp peer's folder (benchmarks/llama/build_llama.sh's "
                   "LLAMA_DIR; default: $AIGC_LLAMA_DIR)")
    args = p.parse_args()
    os.environ["AIGC_NUM_THREADS"] = str(args.threads)  # --step's process, and inherited by the workers
    records = Records(machine(args.threads))
    if args.step or args.lstm:
        (step_share if args.step else lstm_native_vs_onnxruntime)(args, records)
        return records.save(args)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    bandwidth = read_bandwidth(args.threads)
    records.machine["read_bandwidth_gbs"] = bandwidth / 1e9
    print(f"read bandwidth ({args.threads} threads): {bandwidth / 1e9:.1f} GB/s")
    with_gpt2_small = not args.quick or (cache / "gpt2-small-random.onnx").is_file()
    if not with_gpt2_small:
        print("  gpt2-small: skipped in --quick until a full run has built it")
    files = text_workers.in_fresh_process(models.prepare, cache, with_gpt2_small)
    cpu_rows(args, records, files, bandwidth)
    gpu_rows(args, records, files)
    records.save(args)


if __name__ == "__main__":
    main()
