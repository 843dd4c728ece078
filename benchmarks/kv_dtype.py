"""The native decoder's KV cache in bf16 against float32: greedy agreement and speed.

agreement: pycode-gpt (float32 weights), 16 prompts of 16 tokens of standard-library
source x 240 greedy tokens (its context is 256), float32 vs bf16 K/V: the share of
identical tokens position by position, the share before each prompt's first divergence,
and where those divergences fall.
speed: the GPT-2-small shape (124M, random init: benchmarks/text.py's file), float32
weights, batch 32, prompt 512, 128 new tokens, greedy: tokens/s of the whole call
(batch x new tokens / wall) and of its decode-only steps, the two kv dtypes taking turns
round by round; medians, and their ratio bf16 / float32. Both caches get the same
budget, large enough that neither preempts.

    python benchmarks/kv_dtype.py [--quick] [--only agreement|speed] [--json out.json] [--cache DIR]
"""

from __future__ import annotations

import os
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Records, machine, parser  # noqa: E402

KV_DTYPES = ("float32", "bfloat16")


def source_tokens(tokenizer, count: int) -> list[int]:
    """`count` token ids of standard-library source, file after file."""
    ids: list[int] = []
    for name in ("argparse.py", "typing.py", "inspect.py", "subprocess.py", "dataclasses.py", "pathlib.py"):
        ids += tokenizer.encode(Path(sysconfig.get_paths()["stdlib"], name).read_text())
        if len(ids) >= count:
            return ids[:count]
    raise RuntimeError(f"fewer than {count} tokens of source")


def agreement(records: Records, prompts: int, new_tokens: int) -> None:
    from aigc_engine import SamplingParams, TextGenerator

    generators = {kv: TextGenerator.load("pycode-gpt", backend="native", kv_dtype=kv) for kv in KV_DTYPES}
    ids = source_tokens(generators["float32"].tokenizer, prompts * 997)
    batch = [ids[i * 997:i * 997 + 16] for i in range(prompts)]  # 16-token prompts, ~1000 tokens apart
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    out = {kv: [c.token_ids for c in g.generate(batch, params)] for kv, g in generators.items()}
    same = total = before = 0
    first: list[int] = []
    for a, b in zip(out["float32"], out["bfloat16"]):
        same += sum(x == y for x, y in zip(a, b))
        total += len(a)
        diverged = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        before += diverged
        first.append(diverged)
    print(f"pycode-gpt, {prompts} prompts x {new_tokens} greedy tokens, bf16 vs float32 K/V:")
    print(f"  identical tokens (position by position): {same}/{total} = {same / total:.4f}")
    print(f"  tokens before the first divergence:      {before}/{total} = {before / total:.4f}")
    print(f"  first divergence per prompt ({new_tokens} = none): {sorted(first)}")
    params_of = {"model": "pycode-gpt", "prompts": prompts, "new_tokens": new_tokens}
    records.add("kv_dtype_agreement", "identical", params_of, same / total, "fraction")
    records.add("kv_dtype_agreement", "before_first_divergence", params_of, before / total, "fraction")


class TimedSteps:
    """The native batch (_C.Generation) with the wall time of its decode-only steps kept:
    those that start with nothing waiting, so no prompt joins them (admission happens
    inside a step, and the benchmark checks that nothing was preempted back to waiting)."""

    def __init__(self, native):
        self.native = native
        self.decode_seconds = 0.0
        self.decode_tokens = 0

    def __getattr__(self, name):
        return getattr(self.native, name)

    def step(self):
        decode_only = self.native.num_waiting == 0
        started = time.perf_counter()
        result = self.native.step()
        if decode_only:
            self.decode_seconds += time.perf_counter() - started
            self.decode_tokens += len(result[0])
        return result


def speed(records: Records, cache: Path, threads: int, batch: int, prompt: int, new_tokens: int, rounds: int) -> None:
    from aigc_engine import SamplingParams, TextGenerator
    from text import gpt2_small

    shipped = TextGenerator.load("pycode-gpt", backend="onnxruntime")
    found = gpt2_small(cache, shipped.artifact.tokenizer_json)
    if found is None:
        return
    onnx_path = found[1]
    # float32 K/V for every token the batch reaches (GPT-2-small: 12 layers x 768), with 5 %
    # to spare: neither dtype preempts.
    kv_cache_mb = 1.05 * batch * (prompt + new_tokens) * 2 * 12 * 768 * 4 / 2**20
    generators = {}
    for kv in KV_DTYPES:
        g = TextGenerator.load(str(onnx_path), backend="native", max_batch_size=batch, kv_dtype=kv,
                               kv_cache_mb=kv_cache_mb)
        g.scheduler._native = TimedSteps(g.scheduler._native)
        generators[kv] = g
    ids = source_tokens(shipped.tokenizer, batch * prompt)
    prompts = [ids[i * prompt:(i + 1) * prompt] for i in range(batch)]
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    for g in generators.values():  # warm-up: thread pool, buffers at their largest
        g.generate(prompts[:2], SamplingParams(max_new_tokens=4, temperature=0.0, ignore_eos=True))
    whole = {kv: [] for kv in KV_DTYPES}
    decode = {kv: [] for kv in KV_DTYPES}
    print(f"\ngpt2-small shape, batch {batch}, prompt {prompt}, {new_tokens} new tokens, {threads} threads "
          f"({rounds} rounds, the kv dtypes alternating):")
    for r in range(rounds):
        for kv in (KV_DTYPES if r % 2 == 0 else KV_DTYPES[::-1]):
            g = generators[kv]
            timed = g.scheduler._native
            timed.decode_seconds, timed.decode_tokens = 0.0, 0
            started = time.perf_counter()
            g.generate(prompts, params)
            seconds = time.perf_counter() - started
            assert g.scheduler.preemptions == 0
            whole[kv].append(batch * new_tokens / seconds)
            decode[kv].append(timed.decode_tokens / timed.decode_seconds)
            print(f"  round {r + 1} {kv:<9} whole call {whole[kv][-1]:7.1f} tok/s ({seconds:5.1f} s), "
                  f"decode steps {decode[kv][-1]:7.1f} tok/s", flush=True)
    params_of = {"model": "gpt2-small", "batch": batch, "prompt": prompt, "new_tokens": new_tokens, "threads": threads}
    for name, rates in (("whole call", whole), ("decode steps", decode)):
        medians = {kv: statistics.median(v) for kv, v in rates.items()}
        for kv, value in medians.items():
            records.add(f"kv_dtype_{name.replace(' ', '_')}", f"aigc-native-kv-{kv}", params_of, value, "tokens/s")
        print(f"  {name:<12}: float32 K/V {medians['float32']:7.1f} tok/s, bf16 K/V {medians['bfloat16']:7.1f} "
              f"tok/s, bf16 / float32 = {medians['bfloat16'] / medians['float32']:.2f}x")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--only", choices=("agreement", "speed"), default=None)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aigc-bench"),
                   help="where converted models live between runs (the GPT-2-small file of benchmarks/text.py)")
    args = p.parse_args()
    os.environ["AIGC_NUM_THREADS"] = str(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    records = Records(machine(args.threads))
    if args.only in (None, "agreement"):
        agreement(records, 16, 240)
    if args.only in (None, "speed"):
        if args.quick:
            speed(records, cache, args.threads, batch=32, prompt=512, new_tokens=32, rounds=2)
        else:
            speed(records, cache, args.threads, batch=32, prompt=512, new_tokens=128, rounds=4)
    records.save(args)


if __name__ == "__main__":
    main()
