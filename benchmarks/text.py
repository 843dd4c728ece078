"""Tokens/s of text generation: Hugging Face `generate` (PyTorch eager) vs aigc_engine.

Tokens/s = batch × new tokens / wall time of the whole call: prompt 32 tokens, 128 new
tokens (greedy, no early stop), batch 1, 8 and 32, the same thread count everywhere.
Two models: the shipped pycode-gpt, and a GPT-2-small-shaped model (124M, random
init) saved in Hugging Face format and brought in with `aigc import-hf`, so every
system runs the same weights. The ratio is aigc_engine over Hugging Face.

    python benchmarks/text.py [--quick] [--json results.json] [--cache DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import Records, interleaved_medians, machine, parser

from aigc_engine import SamplingParams, TextGenerator

PROMPT_TOKENS = 32
NEW_TOKENS = 128
BATCHES = (1, 8, 32)


def gpt2_small_onnx(cache: Path) -> Path | None:
    """The GPT-2-small-shaped model: random init (seed 0), saved with save_pretrained,
    imported by aigc_export; built once into the cache folder."""
    out = cache / "gpt2-small-random.onnx"
    if out.is_file():
        return out
    try:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
        from aigc_export.hf_import import import_hf
        from aigc_export.tokenizer import train_tokenizer
    except ImportError as error:
        print(f"  gpt2-small: skipped ({error.name} is not installed)")
        return None
    print(f"  building gpt2-small (random init) into {cache} (once)...", flush=True)
    torch.manual_seed(0)
    hf_dir = cache / "gpt2-small-random-hf"
    GPT2LMHeadModel(GPT2Config()).save_pretrained(hf_dir)
    train_tokenizer(vocab_size=512).save(str(hf_dir / "tokenizer.json"))
    return import_hf(hf_dir, out)


def hf_model(generator: TextGenerator, threads: int):
    """GPT2LMHeadModel with the ONNX file's own weights (they keep GPT-2's names)."""
    try:
        import torch
        from onnx import numpy_helper
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as error:
        print(f"  Hugging Face generate: skipped ({error.name} is not installed)")
        return None
    torch.set_num_threads(threads)
    c = generator.artifact.config
    config = GPT2Config(vocab_size=c["vocab_size"], n_positions=c["n_positions"], n_embd=c["n_embd"],
                        n_layer=c["n_layer"], n_head=c["n_head"], layer_norm_epsilon=c.get("layer_norm_epsilon", 1e-5),
                        eos_token_id=c["eos_token_id"], bos_token_id=c["eos_token_id"])
    model = GPT2LMHeadModel(config).eval()
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
               for t in generator.artifact.model.graph.initializer}
    state = model.state_dict()
    missing = [name for name in state if name not in weights and not name.startswith("lm_head")]
    if missing:
        print(f"  Hugging Face generate: skipped (the ONNX file lacks {missing[:3]}...)")
        return None
    model.load_state_dict({name: weights.get(name, weights["transformer.wte.weight"]) for name in state})
    return model


def prompts_for(generator: TextGenerator, batch: int) -> list[list[int]]:
    """batch prompts of exactly PROMPT_TOKENS ids, cut from the standard library's source."""
    import sysconfig
    text = Path(sysconfig.get_paths()["stdlib"], "argparse.py").read_text()
    ids = generator.tokenizer.encode(text)
    return [ids[i * PROMPT_TOKENS:(i + 1) * PROMPT_TOKENS] for i in range(batch)]


def run_hf(model, prompts: list[list[int]], new_tokens: int):
    import torch
    ids = torch.tensor(prompts)
    def run():
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        assert out.shape[1] == PROMPT_TOKENS + new_tokens
    return run


def run_aigc(generator: TextGenerator, prompts: list[list[int]], new_tokens: int):
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    def run():
        completions = generator.generate(prompts, params)
        assert all(len(c.token_ids) == new_tokens for c in completions), completions[0].error
    return run


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aigc-bench"),
                   help="where the imported GPT-2-small lives between runs")
    args = p.parse_args()
    os.environ["AIGC_NUM_THREADS"] = str(args.threads)
    records = Records(machine(args.threads))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    batches, new_tokens = ((1, 8), 32) if args.quick else (BATCHES, NEW_TOKENS)
    rounds, block_seconds = (1, 0.0) if args.quick else (3, 0.0)
    models = {"pycode-gpt": "pycode-gpt"}
    if not args.quick or (cache / "gpt2-small-random.onnx").is_file():
        path = gpt2_small_onnx(cache)
        if path is not None:
            models["gpt2-small"] = path
    else:
        print("  gpt2-small: skipped in --quick until built once by a full run")
    header = f"{'model':<12} {'batch':>5} {'HF tok/s':>10} {'aigc-ort tok/s':>15} {'vs HF':>7}"
    print(header)
    print("-" * len(header))
    for name, source in models.items():
        generator = TextGenerator.load(str(source), backend="onnxruntime", max_batch_size=max(batches))
        hf = hf_model(generator, args.threads)
        for batch in batches:
            prompts = prompts_for(generator, batch)
            systems = {"aigc_engine-onnxruntime": run_aigc(generator, prompts, new_tokens)}
            if hf is not None:
                systems["hf-generate"] = run_hf(hf, prompts, new_tokens)
            seconds = interleaved_medians(systems, rounds, block_seconds)
            rate = {system: batch * new_tokens / s for system, s in seconds.items()}
            for system, value in rate.items():
                records.add("text", system, {"model": name, "batch": batch, "prompt": PROMPT_TOKENS,
                                             "new_tokens": new_tokens, "threads": args.threads}, value, "tokens/s")
            ours = rate["aigc_engine-onnxruntime"]
            theirs = rate.get("hf-generate")
            print(f"{name:<12} {batch:>5} {theirs or float('nan'):>10.1f} {ours:>15.1f} "
                  f"{(ours / theirs if theirs else float('nan')):>6.2f}x", flush=True)
    records.write(args.json)


if __name__ == "__main__":
    sys.exit(main())
