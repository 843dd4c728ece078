"""The native CPU kernels against PyTorch and numpy: causal attention prefill, paged decode,
the sampler, and the GPT block's layer norm (with the residual add), GELU and projections.

Same inputs to every system, the same thread count; ratios are aigc_engine over each
peer. Roofline: prefill against the measured fp32 GEMM peak (GFLOP/s of the causal
attention, 2 * S^2 * d per head), decode against the measured read bandwidth (the K/V bytes
it must read), the sampler against one read of the logits at that bandwidth; layer norm,
GELU and the one-row projections (m = 1, a decode step) against the bytes they must move
at that bandwidth (GB/s, and its share).

    python benchmarks/native_kernels.py [--quick] [--json results.json] [--threads 2]
"""

from __future__ import annotations

import os
import sys

import numpy as np

# Run as `python -P benchmarks/native_kernels.py` (keeping the source tree's aigc_engine, which has
# no built _C, off sys.path): -P also drops this folder, where common.py lives.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Records, describe_peak, gemm_peak_flops, machine, median_seconds, parser,  # noqa: E402
                    peak_share, read_bandwidth)

PREFILL = ((8, 12, 512, 64), (1, 12, 2048, 64))
DECODE = dict(batch=32, context=1024, heads=12, head_dim=64, block_size=16)
SAMPLER = dict(batch=64, vocab=50257, temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.1, history=100)
# GPT-2 small's block over 4096 tokens of prefill: the residual stream (tokens, n_embd), the
# MLP's hidden (tokens, 4 * n_embd), its first projection c_fc (n_embd, 4 * n_embd) at m = 1.
# Every array outgrows the last-level cache (50 MB of hidden; the projections cycle through
# >= 256 MB of weight copies, as a decode step reads its layers), so memory bandwidth is the bound.
BLOCK = dict(tokens=4096, dim=768, hidden=3072)
COLD_BYTES = 256 * 2**20
# The sampler inside generation: the shipped GPT (vocab 4096), native float32, prompt 32.
IN_GENERATION = dict(model="pycode-gpt", batches=(1, 32), prompt=32, new_tokens=128)


def import_torch(threads: int):
    try:
        import torch
    except ImportError:
        print("  torch: skipped (not installed)")
        return None
    torch.set_num_threads(threads)
    return torch


def row(bench: str, system: str, seconds: float, extra: str = "", ratio: str = "") -> None:
    print(f"{bench:<34} {system:<30} {seconds * 1e3:>10.3f} {ratio:>9} {extra}")


def prefill_rows(ops, torch, records, peak, repeats, min_seconds):
    rng = np.random.default_rng(0)
    for batch, heads, seq, dim in PREFILL:
        bench = f"prefill ({batch},{heads},{seq},{dim})"
        params = {"batch": batch, "heads": heads, "seq": seq, "head_dim": dim}
        flops = 2 * batch * heads * seq * seq * dim
        q, k, v = (rng.standard_normal((batch * seq, heads, dim), dtype=np.float32) for _ in range(3))
        cu = np.arange(batch + 1, dtype=np.int32) * seq
        kb, vb = ops.to_bf16(k), ops.to_bf16(v)
        out = np.empty_like(q)
        times = {"aigc fp32": median_seconds(lambda: ops.attention_prefill(q, k, v, cu, out=out), repeats, min_seconds),
                 "aigc bf16 K/V": median_seconds(lambda: ops.attention_prefill(q, kb, vb, cu, out=out), repeats,
                                                 min_seconds)}
        if torch is not None:
            tq, tk, tv = (torch.from_numpy(x).view(batch, seq, heads, dim).transpose(1, 2).contiguous() for x in (q, k, v))
            sdpa = torch.nn.functional.scaled_dot_product_attention
            with torch.inference_mode():
                times["torch SDPA fp32"] = median_seconds(lambda: sdpa(tq, tk, tv, is_causal=True), repeats, min_seconds)
        for system, seconds in times.items():
            records.add("attention_prefill", system, params, flops / seconds / 1e9, "GFLOP/s")
            ratio = f"{times['torch SDPA fp32'] / seconds:.2f}x" if "torch SDPA fp32" in times else "-"
            share = peak_share(flops / seconds, peak)
            row(bench, system, seconds, f"{flops / seconds / 1e9:7.1f} GFLOP/s  {share:>6} peak", ratio)


def decode_inputs(rng):
    """DECODE's query, paged K/V cache (float32, blocks in a shuffled order), block table and lengths."""
    c = DECODE
    blocks_per_seq = c["context"] // c["block_size"]
    num_blocks = c["batch"] * blocks_per_seq
    shape = (num_blocks, c["block_size"], c["heads"], c["head_dim"])
    k_cache, v_cache = (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
    table = rng.permutation(num_blocks).astype(np.int32).reshape(c["batch"], blocks_per_seq)
    lens = np.full(c["batch"], c["context"], np.int32)
    q = rng.standard_normal((c["batch"], c["heads"], c["head_dim"]), dtype=np.float32)
    return q, k_cache, v_cache, table, lens


def decode_rows(ops, torch, records, bandwidth, repeats, min_seconds):
    c = DECODE
    rng = np.random.default_rng(1)
    q, k_cache, v_cache, table, lens = decode_inputs(rng)
    out = np.empty_like(q)
    bench = "decode (32 x 1024, 12 heads, 64)"
    times = {}
    for label, (kc, vc) in {"fp32": (k_cache, v_cache), "bf16": (ops.to_bf16(k_cache), ops.to_bf16(v_cache))}.items():
        kv_bytes = kc.nbytes + vc.nbytes
        times[f"aigc {label}"] = (median_seconds(lambda: ops.attention_decode(q, kc, vc, table, lens, out=out),
                                                 repeats, min_seconds), kv_bytes)
    if torch is not None:
        tk, tv, tt, tq = (torch.from_numpy(x) for x in (k_cache, v_cache, table.astype(np.int64), q))

        def gather_sdpa():
            # (batch, blocks, block_size, heads, dim) -> (batch, heads, context, dim)
            k = tk[tt].flatten(1, 2).transpose(1, 2)
            v = tv[tt].flatten(1, 2).transpose(1, 2)
            return torch.nn.functional.scaled_dot_product_attention(tq[:, :, None], k, v)
        with torch.inference_mode():
            times["torch gather + SDPA fp32"] = (median_seconds(gather_sdpa, repeats, min_seconds),
                                                 k_cache.nbytes + v_cache.nbytes)
    for system, (seconds, kv_bytes) in times.items():
        bound = kv_bytes / bandwidth
        records.add("attention_decode", system, dict(c), seconds * 1e3, "ms")
        ratio = f"{times['torch gather + SDPA fp32'][0] / seconds:.2f}x" if len(times) > 2 else "-"
        row(bench, system, seconds, f"{kv_bytes / seconds / 1e9:6.1f} GB/s  {100 * bound / seconds:5.1f}% of bound", ratio)


def sampler_rows(ops, torch, records, bandwidth, repeats, min_seconds):
    c = SAMPLER
    b, vocab = c["batch"], c["vocab"]
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((b, vocab)) * 3).astype(np.float32)
    history = rng.integers(0, vocab, (b, c["history"]))
    kwargs = dict(seeds=np.arange(b, dtype=np.uint64), steps=np.zeros(b, np.uint64),
                  temperature=np.full(b, c["temperature"], np.float32), top_k=np.full(b, c["top_k"], np.int32),
                  top_p=np.full(b, c["top_p"], np.float32), min_p=np.zeros(b, np.float32),
                  repetition_penalty=np.full(b, c["repetition_penalty"], np.float32),
                  presence_penalty=np.zeros(b, np.float32), frequency_penalty=np.zeros(b, np.float32),
                  history=history.ravel().astype(np.int64),
                  history_offsets=np.arange(b + 1, dtype=np.int64) * c["history"],
                  prompt_lens=np.full(b, c["history"], np.int64))
    times = {"aigc sample": median_seconds(lambda: ops.sample(logits, **kwargs), repeats, min_seconds)}
    if torch is not None:
        tl, ids = torch.from_numpy(logits), torch.from_numpy(history)

        def penalise(scores):
            picked = torch.gather(scores, 1, ids)
            picked = torch.where(picked < 0, picked * c["repetition_penalty"], picked / c["repetition_penalty"])
            return scores.scatter(1, ids, picked)

        def topk_first():
            scores = penalise(tl) / c["temperature"]
            values, index = torch.topk(scores, c["top_k"])
            probs = values.softmax(-1)
            cumulative = probs.cumsum(-1)
            probs = probs.masked_fill(cumulative - probs > c["top_p"], 0)
            return index.gather(1, torch.multinomial(probs, 1))
        try:
            from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                                TemperatureLogitsWarper, TopKLogitsWarper,
                                                                TopPLogitsWarper)
            warpers = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(c["repetition_penalty"]),
                                           TemperatureLogitsWarper(c["temperature"]), TopKLogitsWarper(c["top_k"]),
                                           TopPLogitsWarper(c["top_p"])])
            hf_name = "HF warpers + multinomial"

            def hf():
                return torch.multinomial(warpers(ids, tl.clone()).softmax(-1), 1)
        except ImportError:
            print("  transformers: not installed, HF's sort-based warpers re-implemented in torch")
            hf_name = "HF-style sort warpers + multinomial"

            def hf():
                scores = penalise(tl) / c["temperature"]
                kth = torch.topk(scores, c["top_k"])[0][..., -1, None]
                scores = scores.masked_fill(scores < kth, -float("inf"))
                sorted_logits, sorted_index = torch.sort(scores, descending=False)
                cumulative = sorted_logits.softmax(-1).cumsum(-1)
                remove = cumulative <= (1 - c["top_p"])
                remove[..., -1:] = False
                scores = scores.masked_fill(remove.scatter(1, sorted_index, remove), -float("inf"))
                return torch.multinomial(scores.softmax(-1), 1)
        with torch.inference_mode():
            times[hf_name] = median_seconds(hf, max(3, repeats // 3), 0.0)
            times["torch top-k first + top-p"] = median_seconds(topk_first, repeats, min_seconds)
            times["torch argmax (no sampling)"] = median_seconds(lambda: tl.argmax(-1), repeats, min_seconds)
    one_read = logits.nbytes / bandwidth
    times["one read of the logits"] = one_read
    ours = times["aigc sample"]
    for system, seconds in times.items():
        if system != "one read of the logits":
            records.add("sample", system, dict(c), seconds * 1e3, "ms")
        ratio = f"{seconds / ours:.2f}x" if system != "aigc sample" else "1.00x"
        row(f"sample ({b}, {vocab})", system, seconds, f"{seconds / one_read:6.1f}x one read", ratio)
    records.add("sample", "one read at measured bandwidth", dict(c), one_read * 1e3, "ms")


def bandwidth_row(records, bench, name, params, times, moved, bandwidth, ours):
    """One row per system: ms, its time / ours, GB/s of the bytes the kernel must move and
    that rate's share of the measured read bandwidth. moved: bytes, or bytes per system."""
    for system, seconds in times.items():
        records.add(name, system, params, seconds * 1e3, "ms")
        nbytes = moved[system] if isinstance(moved, dict) else moved
        row(bench, system, seconds, f"{nbytes / seconds / 1e9:6.1f} GB/s  {100 * nbytes / bandwidth / seconds:5.1f}% of bw",
            f"{seconds / times[ours]:.2f}x")


def block_rows(ops, torch, records, bandwidth, repeats, min_seconds):
    """Layer norm with the residual add, GELU and one-row projections: ours, numpy, torch."""
    c = BLOCK
    rng = np.random.default_rng(3)
    tokens, dim, hidden = c["tokens"], c["dim"], c["hidden"]
    h = rng.standard_normal((tokens, dim), dtype=np.float32)
    delta = rng.standard_normal((tokens, dim), dtype=np.float32)
    weight, bias = rng.standard_normal(dim, dtype=np.float32), rng.standard_normal(dim, dtype=np.float32)
    y = np.empty_like(h)

    # Every system adds delta into its own copy of h in place, as the decoder's residual stream
    # does (h drifts by delta per call: a few thousand calls leave it finite and no slower).
    h_numpy, h_ours = h.copy(), h.copy()

    def numpy_layer_norm():
        np.add(h_numpy, delta, out=h_numpy)
        mean = h_numpy.mean(axis=1, keepdims=True)
        centred = h_numpy - mean
        return centred / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + np.float32(1e-5)) * weight + bias
    times = {"aigc layer_norm": median_seconds(lambda: ops.layer_norm(h_ours, weight, bias, residual=delta, out=y),
                                               repeats, min_seconds),
             "numpy": median_seconds(numpy_layer_norm, repeats, min_seconds)}
    if torch is not None:
        th, td, tw, tb = (torch.from_numpy(a) for a in (h.copy(), delta, weight, bias))
        with torch.inference_mode():
            times["torch add_ + layer_norm"] = median_seconds(
                lambda: torch.nn.functional.layer_norm(th.add_(td), (dim,), tw, tb, 1e-5), repeats, min_seconds)
    # The least any of them moves: read h and delta, write h + delta and y.
    bandwidth_row(records, f"layer_norm + residual ({tokens}, {dim})", "layer_norm", {"tokens": tokens, "dim": dim},
                  times, 4 * h.nbytes, bandwidth, "aigc layer_norm")

    x = rng.standard_normal((tokens, hidden), dtype=np.float32) * 3
    out = np.empty_like(x)
    k0, k1, half = (np.float32(v) for v in (0.7978845608, 0.044715, 0.5))
    times = {"aigc gelu": median_seconds(lambda: ops.gelu(x, out=out), repeats, min_seconds),
             "numpy": median_seconds(lambda: half * x * (1 + np.tanh(k0 * (x + k1 * x * x * x))), repeats, min_seconds)}
    if torch is not None:
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            times["torch gelu(tanh)"] = median_seconds(lambda: torch.nn.functional.gelu(tx, approximate="tanh"),
                                                       repeats, min_seconds)
    bandwidth_row(records, f"gelu ({tokens}, {hidden})", "gelu", {"tokens": tokens, "hidden": hidden}, times,
                  2 * x.nbytes, bandwidth, "aigc gelu")

    w = (rng.standard_normal((dim, hidden)) * 0.02).astype(np.float32)
    b = rng.standard_normal(hidden).astype(np.float32)
    x1 = rng.standard_normal((1, dim)).astype(np.float32)
    out1 = np.empty((1, hidden), np.float32)
    copies = -(-COLD_BYTES // w.nbytes)

    def cycling(fns):
        """Seconds per call of one round through fns (each on its own copy of the weights)."""
        def round_():
            for fn in fns:
                fn()
        return median_seconds(round_, max(3, repeats // 3), min_seconds) / len(fns)
    ws = [w.copy() for _ in range(copies)]
    baseline_s = {"numpy float32 (x @ w + b)": cycling([lambda w=w: x1 @ w + b for w in ws])}
    if torch is not None:
        tb1, tx1 = torch.from_numpy(b), torch.from_numpy(x1)
        tws = [torch.from_numpy(w.T.copy()) for w in ws]  # torch's (out_features, in_features)
        with torch.inference_mode():
            baseline_s["torch float32 linear"] = cycling(
                [lambda tw=tw: torch.nn.functional.linear(tx1, tw, tb1) for tw in tws])
        del tws
    del ws
    for dtype, size in (("float32", 4), ("bfloat16", 2), ("int8", 1)):
        layers = [ops.Linear(w, b, dtype) for _ in range(-(-COLD_BYTES // (w.size * size)))]
        times = {f"aigc Linear {dtype}": cycling([lambda layer=layer: layer.forward(x1, out=out1) for layer in layers]),
                 **baseline_s}
        del layers
        # The weights dominate what a one-row projection reads: theirs in float32, ours in dtype.
        moved = {system: dim * hidden * (size if system.startswith("aigc") else 4) for system in times}
        bandwidth_row(records, f"Linear m=1 ({dim}, {hidden}) {dtype}", "linear",
                      {"m": 1, "k": dim, "n": hidden, "dtype": dtype}, times, moved, bandwidth, f"aigc Linear {dtype}")


def sampler_share_rows(records, quick: bool):
    """The sampler's share of generation: the time in ops.Sampler (preparing it for a batch,
    and its calls, one per decode step) over the whole generate call of the shipped GPT,
    with the SAMPLER's parameters — on the onnxruntime backend, whose loop calls ops.Sampler
    from Python (the native decoder samples inside its own step, out of Python's sight:
    benchmarks/text.py --step gives Python's share of that step)."""
    import time

    from aigc_engine import SamplingParams, TextGenerator, ops

    c, s = IN_GENERATION, SAMPLER
    generator = TextGenerator.load(c["model"], backend="onnxruntime")
    spent = [0.0]
    methods = {name: getattr(ops.Sampler, name) for name in ("__init__", "__call__")}

    def timed(method):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        return wrapper
    params = SamplingParams(max_new_tokens=c["new_tokens"] // (4 if quick else 1), temperature=s["temperature"],
                            top_k=s["top_k"], top_p=s["top_p"], repetition_penalty=s["repetition_penalty"],
                            ignore_eos=True, seed=0)
    prompt = list(range(100, 100 + c["prompt"]))
    for name, method in methods.items():
        setattr(ops.Sampler, name, timed(method))
    try:
        for batch in c["batches"]:
            generator.generate([prompt] * batch, params)  # warm-up
            shares, totals = [], []
            for _ in range(1 if quick else 3):
                spent[0] = 0.0
                started = time.perf_counter()
                generator.generate([prompt] * batch, params)
                totals.append(time.perf_counter() - started)
                shares.append(spent[0] / totals[-1])
            share, steps = float(np.median(shares)), params.max_new_tokens
            records.add("sample_in_generation", "aigc sample", dict(c, batch=batch, backend="onnxruntime"), 100 * share,
                        "% of generate")
            row(f"sample in onnxruntime generate, batch {batch}", f"{c['model']}, {steps} steps",
                share * float(np.median(totals)) / steps,
                f"{100 * share:5.1f}% of a decode step ({float(np.median(totals)) / steps * 1e3:.2f} ms)")
    finally:
        for name, method in methods.items():
            setattr(ops.Sampler, name, method)


def main() -> None:
    args = parser(__doc__).parse_args()
    os.environ["AIGC_NUM_THREADS"] = str(args.threads)
    from aigc_engine import ops

    records = Records(machine(args.threads))
    repeats, min_seconds = (3, 0.2) if args.quick else (9, 1.0)
    torch = import_torch(args.threads)
    peak = gemm_peak_flops(args.threads)
    bandwidth = read_bandwidth(args.threads, 256 if args.quick else 1024)
    records.machine["read_bandwidth_gbs"] = bandwidth / 1e9
    print(f"{describe_peak(peak, args.threads, records)}; read bandwidth: {bandwidth / 1e9:.1f} GB/s")
    print("ratio: prefill and decode = torch time / ours; sampler and the block's kernels = that system's time / ours")
    header = f"{'benchmark':<34} {'system':<30} {'ms':>10} {'ratio':>9} roofline"
    print(header)
    print("-" * (len(header) + 30))
    prefill_rows(ops, torch, records, peak, repeats, min_seconds)
    decode_rows(ops, torch, records, bandwidth, repeats, min_seconds)
    sampler_rows(ops, torch, records, bandwidth, repeats, min_seconds)
    block_rows(ops, torch, records, bandwidth, repeats, min_seconds)
    sampler_share_rows(records, args.quick)
    cuda_attention_rows(ops, records, repeats, min_seconds)
    cuda_sampler_rows(ops, records, repeats, min_seconds)
    records.save(args)


def cuda_attention_rows(ops, records, repeats, min_seconds):
    """The CUDA attention kernels, where a GPU is visible, against torch on the same GPU (where
    torch sees it): prefill vs SDPA's flash backend (FlashAttention-2) in fp16 and bf16 — ours
    reads fp32 queries and fp32 or bf16 K/V and computes in fp32 on CUDA cores — and decode vs
    gather + SDPA in fp32. Ours: the kernels alone, timed by CUDA events on one copy of the
    inputs; torch: wall clock around 20 calls and a torch.cuda.synchronize(). Ratio: torch's time
    over ours, for prefill the faster of flash fp16 and bf16 (the issue's target: >= 0.9x)."""
    if not ops.cuda_available():
        return
    from aigc_engine import _C
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        print("  torch on CUDA: skipped (not installed, or it sees no GPU)")
        torch = None
    runs = 20

    def torch_seconds(fn):
        def calls():
            for _ in range(runs):
                fn()
            torch.cuda.synchronize()
        return median_seconds(calls, repeats, min_seconds) / runs  # after one warm-up of `runs` calls

    rng = np.random.default_rng(0)
    for batch, heads, seq, dim in PREFILL:
        bench = f"CUDA prefill ({batch},{heads},{seq},{dim})"
        params = {"batch": batch, "heads": heads, "seq": seq, "head_dim": dim}
        flops = 2 * batch * heads * seq * seq * dim
        q, k, v = (rng.standard_normal((batch * seq, heads, dim), dtype=np.float32) for _ in range(3))
        cu = np.arange(batch + 1, dtype=np.int32) * seq
        out = np.empty_like(q)
        times = {"aigc CUDA fp32": _C.attention_prefill_cuda_seconds(q, k, v, cu, np.nan, out, runs),
                 "aigc CUDA bf16 K/V": _C.attention_prefill_cuda_seconds(q, ops.to_bf16(k), ops.to_bf16(v), cu, np.nan,
                                                                         out, runs)}
        if torch is not None:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            sdpa = torch.nn.functional.scaled_dot_product_attention
            for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                tq, tk, tv = (torch.from_numpy(x).view(batch, seq, heads, dim).transpose(1, 2).contiguous()
                              .to("cuda", dtype) for x in (q, k, v))
                with torch.inference_mode(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    times[f"torch SDPA flash {name}"] = torch_seconds(lambda: sdpa(tq, tk, tv, is_causal=True))
        fastest_flash = min((t for system, t in times.items() if system.startswith("torch")), default=None)
        for system, seconds in times.items():
            records.add("cuda_attention_prefill", system, params, flops / seconds / 1e9, "GFLOP/s")
            ratio = f"{fastest_flash / seconds:.2f}x" if fastest_flash is not None else "-"
            row(bench, system, seconds, f"{flops / seconds / 1e9:8.1f} GFLOP/s", ratio)

    c = DECODE
    q, k_cache, v_cache, table, lens = decode_inputs(rng)
    out = np.empty_like(q)
    bench = f"CUDA decode ({c['batch']} x {c['context']}, {c['heads']} heads, {c['head_dim']})"
    times = {}
    for label, (kc, vc) in {"fp32": (k_cache, v_cache), "bf16": (ops.to_bf16(k_cache), ops.to_bf16(v_cache))}.items():
        times[f"aigc CUDA {label}"] = (_C.attention_decode_cuda_seconds(q, kc, vc, table, lens, np.nan, out, runs),
                                       kc.nbytes + vc.nbytes)
    if torch is not None:
        tk, tv, tt, tq = (torch.from_numpy(x).to("cuda") for x in (k_cache, v_cache, table.astype(np.int64), q))

        def gather_sdpa():
            k = tk[tt].flatten(1, 2).transpose(1, 2)  # (batch, heads, context, dim)
            v = tv[tt].flatten(1, 2).transpose(1, 2)
            return torch.nn.functional.scaled_dot_product_attention(tq[:, :, None], k, v)
        with torch.inference_mode():
            times["torch gather + SDPA fp32"] = (torch_seconds(gather_sdpa), k_cache.nbytes + v_cache.nbytes)
    for system, (seconds, kv_bytes) in times.items():
        records.add("cuda_attention_decode", system, dict(c), seconds * 1e3, "ms")
        ratio = f"{times['torch gather + SDPA fp32'][0] / seconds:.2f}x" if torch is not None else "-"
        row(bench, system, seconds, f"{kv_bytes / seconds / 1e9:7.1f} GB/s of K/V", ratio)


def cuda_sampler_rows(ops, records, repeats, min_seconds):
    """The sampler on the GPU (only where one is visible) at SAMPLER's (batch, vocab), top-k
    then top-p, against FlashInfer's top_k_top_p_sampling_from_logits and torch (top-k, then
    top-p over the survivors, then multinomial), each where importable. Ours takes host
    arrays and returns host arrays (the copies of the logits in and of the tokens out are in
    its time); the peers start and end on the device. Every timed call synchronises."""
    if not ops.cuda_available():
        print("  CUDA sampler: skipped (no CUDA device, or a CPU-only build)")
        return
    from aigc_engine import _C

    c = SAMPLER
    b, vocab = c["batch"], c["vocab"]
    logits = (np.random.default_rng(3).standard_normal((b, vocab)) * 3).astype(np.float32)
    sampler = ops.Sampler(b, vocab, seeds=np.arange(b, dtype=np.uint64), temperature=c["temperature"],
                          top_k=c["top_k"], top_p=c["top_p"], min_p=0.0, repetition_penalty=1.0,
                          presence_penalty=0.0, frequency_penalty=0.0, logprobs=False, device="cuda")

    def ours():
        sampler(logits)
        _C.cuda_synchronize()
    times = {"aigc sample, CUDA (host arrays)": median_seconds(ours, repeats, min_seconds)}
    try:
        import torch
        cuda_torch = torch.cuda.is_available()
    except ImportError:
        torch, cuda_torch = None, False
    if not cuda_torch:
        print("  torch on CUDA: skipped (torch not installed, or without CUDA)")
    else:
        tl = torch.from_numpy(logits).cuda() / c["temperature"]

        def torch_topk_topp():
            values, index = torch.topk(tl, c["top_k"])
            probs = values.softmax(-1)
            probs = probs.masked_fill(probs.cumsum(-1) - probs > c["top_p"], 0)
            token = index.gather(1, torch.multinomial(probs, 1))
            torch.cuda.synchronize()
            return token
        with torch.inference_mode():
            times["torch CUDA top-k + top-p + multinomial"] = median_seconds(torch_topk_topp, repeats, min_seconds)
        try:
            import flashinfer

            def flashinfer_sample():
                token = flashinfer.sampling.top_k_top_p_sampling_from_logits(tl, c["top_k"], c["top_p"])
                torch.cuda.synchronize()
                return token
            times["FlashInfer top_k_top_p_sampling_from_logits"] = median_seconds(flashinfer_sample, repeats,
                                                                                  min_seconds)
        except Exception as error:  # not installed, or an API this call does not match
            print(f"  FlashInfer: skipped ({type(error).__name__}: {error})")
    ours_seconds = times["aigc sample, CUDA (host arrays)"]
    for system, seconds in times.items():
        records.add("sample_cuda", system, dict(c, repetition_penalty=1.0, history=0), seconds * 1e3, "ms")
        row(f"sample CUDA ({b}, {vocab})", system, seconds, "", f"{seconds / ours_seconds:.2f}x")


if __name__ == "__main__":
    main()
