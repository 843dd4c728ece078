"""The native GPT decoder against independent references: imported Hugging Face GPT-2
checkpoints (transformers' logits and greedy `generate`), the onnxruntime backend on the
shipped model, and held-out perplexity of bf16 / int8 weights against float32."""

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import aigc_export  # noqa: E402
from aigc_engine import SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.artifacts.registry import MODELS_DIR  # noqa: E402

torch.set_num_threads(1)
TEXTS = ["def main():\n    print('hello, world')\n", "for i in range(10):\n    total += i * i\n"] * 3
GREEDY = SamplingParams(max_new_tokens=64, temperature=0.0, ignore_eos=True)


def hf_gpt2(folder: Path, n_layer: int, n_head: int, n_embd: int, seed: int):
    tokenizer = aigc_export.train_tokenizer(TEXTS, 300)
    config = transformers.GPT2Config(vocab_size=300, n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # larger than the 0.02 init, so that greedy paths are not flat
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return model


def decode_one(backend, blocks: list[int], token: int, position: int, logits: np.ndarray) -> None:
    """One token of one sequence through the decoder (a prompt of one token at position 0)."""
    backend.model.forward(np.array([token], np.int64), np.array([position], np.int64), np.array([0, 1], np.int32),
                          np.array([position + 1], np.int32), np.array([position == 0], np.uint8),
                          np.array([blocks], np.int32), backend.cache, logits)


@pytest.mark.parametrize("n_layer, n_head, n_embd", [(1, 2, 32), (2, 4, 64), (3, 3, 48)])
def test_imported_gpt2_greedy_and_logits_match_transformers(tmp_path, n_layer, n_head, n_embd):
    model = hf_gpt2(tmp_path / "hf", n_layer, n_head, n_embd, seed=n_layer)
    path = aigc_export.import_hf(tmp_path / "hf", tmp_path / "gpt2.onnx")
    native = TextGenerator.load(str(path), backend="native")
    prompt = native.tokenizer.encode("def main():")
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=64, min_new_tokens=64,
                                  pad_token_id=0)[0, len(prompt):].tolist()
    assert native.generate([prompt], GREEDY)[0].token_ids == expected
    # Logits of every step of that path, one decode step at a time, within 1e-3.
    backend = native.scheduler.backend
    blocks = backend.cache.allocate(backend.blocks_for(len(prompt) + 64))
    tokens = prompt + expected
    logits = np.empty((1, 300), np.float32)
    with torch.no_grad():
        reference = model(torch.tensor([tokens])).logits[0].numpy()
    for t in range(len(tokens)):
        decode_one(backend, blocks, tokens[t], t, logits)
        np.testing.assert_allclose(logits[0], reference[t], atol=1e-3, rtol=0)
    backend.cache.release(blocks)


def test_long_prompts_prefilled_together_match_transformers(tmp_path):
    """Prompts of 40-100 tokens in one batch: their KV-cache writes run over the pool from 64
    tokens on, in pieces that cut across the prompts, and their attention reads q, k and v in
    place from the qkv projection; each prompt's greedy tokens still equal transformers'."""
    model = hf_gpt2(tmp_path / "hf", 2, 4, 64, seed=7)
    path = aigc_export.import_hf(tmp_path / "hf", tmp_path / "gpt2.onnx")
    native = TextGenerator.load(str(path), backend="native")
    ids = native.tokenizer.encode("".join(TEXTS) * 6)
    prompts = [ids[:100], ids[7:47], ids[3:93]]
    assert [len(p) for p in prompts] == [100, 40, 90]
    params = SamplingParams(max_new_tokens=16, temperature=0.0, ignore_eos=True)
    for prompt, completion in zip(prompts, native.generate(prompts, params), strict=True):
        with torch.no_grad():
            expected = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=16, min_new_tokens=16,
                                      pad_token_id=0)[0, len(prompt):].tolist()
        assert completion.token_ids == expected


shipped = pytest.mark.skipif(not (MODELS_DIR / "pycode-gpt.onnx").is_file(), reason="pycode-gpt is not installed")


@shipped
def test_shipped_model_native_equals_onnxruntime_greedy():
    prompts = ["import os\n", "def parse_args(", "class Config:\n    "]
    params = SamplingParams(max_new_tokens=48, temperature=0.0, ignore_eos=True)
    native = [c.token_ids for c in TextGenerator.load("pycode-gpt", backend="native").generate(prompts, params)]
    ort = [c.token_ids for c in TextGenerator.load("pycode-gpt", backend="onnxruntime").generate(prompts, params)]
    assert native == ort


def heldout_tokens(tokenizer, count: int) -> list[int]:
    """Standard-library text the shipped model did not train on (the training split's rule)."""
    from aigc_export.text.data import corpus_files, read_documents, split_documents
    _, heldout = split_documents(read_documents(corpus_files(None)[1]))
    return tokenizer.encode("\n".join(heldout))[:count]


def perplexity(generator: TextGenerator, tokens: list[int], window: int) -> float:
    """exp(mean negative log-likelihood) over windows of `window` tokens, one decode step per token."""
    backend = generator.scheduler.backend
    vocab = backend.vocab_size
    logits = np.empty((1, vocab), np.float32)
    total, count = 0.0, 0
    for start in range(0, len(tokens) - window + 1, window):
        chunk = tokens[start:start + window]
        blocks = backend.cache.allocate(backend.blocks_for(window))
        for t in range(window - 1):
            decode_one(backend, blocks, chunk[t], t, logits)
            row = logits[0].astype(np.float64)
            total -= row[chunk[t + 1]] - (row.max() + math.log(np.exp(row - row.max()).sum()))
            count += 1
        backend.cache.release(blocks)
    return math.exp(total / count)


@shipped
def test_bf16_and_int8_weights_keep_the_heldout_perplexity():
    generators = {dtype: TextGenerator.load("pycode-gpt", backend="native", dtype=dtype)
                  for dtype in ("float32", "bfloat16", "int8")}
    tokens = heldout_tokens(generators["float32"].tokenizer, 8 * 128)
    ppl = {dtype: perplexity(g, tokens, 128) for dtype, g in generators.items()}
    assert ppl["float32"] < 0.1 * generators["float32"].tokenizer.vocab_size  # trained: far from uniform
    assert abs(ppl["bfloat16"] / ppl["float32"] - 1) < 0.01, ppl
    assert abs(ppl["int8"] / ppl["float32"] - 1) < 0.03, ppl
