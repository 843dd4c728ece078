"""Hugging Face GPT-2 folders made on the spot, no download: a GPT2LMHeadModel of a given
size with random weights (biases and LayerNorms too, larger than the 0.02 init so that
greedy paths are not flat), saved as transformers saves it, with a byte-level BPE tokenizer
as tokenizer.json or vocab.json + merges.txt."""

from __future__ import annotations

import torch
import transformers

import aigc_export

TEXTS = ["def main():\n    print('hello, world')\n", "for i in range(10):\n    total += i * i\n",
         "naïve café 😀 — 中文\n"] * 3


def save_gpt2(folder, n_layer, n_head, n_embd, n_positions, safetensors=True, tokenizer_json=True, seed=0,
              dtype=torch.float32):
    """Save a random GPT-2 (weights stored as `dtype`) into `folder`; returns (model in float32, tokenizer)."""
    tokenizer = aigc_export.train_tokenizer(TEXTS, 320)
    config = transformers.GPT2Config(vocab_size=320, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                                     n_head=n_head, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random biases and LayerNorm parameters too, and larger weights than
        for p in model.parameters():  # the 0.02 init, so that greedy paths are not flat
            p.add_(0.1 * torch.randn_like(p))
    if dtype != torch.float32:  # the float32 model returned holds the values as rounded to dtype
        model = model.to(dtype)
        model.save_pretrained(folder, safe_serialization=safetensors)
        model = model.float()
    else:
        model.save_pretrained(folder, safe_serialization=safetensors)
    if not safetensors and not (folder / "pytorch_model.bin").exists():
        # transformers 5 writes safetensors whatever safe_serialization says; the legacy
        # file is the pickled state dict (lm_head.weight included), as older versions wrote it
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    if tokenizer_json:
        tokenizer.save(str(folder / "tokenizer.json"))
    else:
        tokenizer.model.save(str(folder))  # vocab.json + merges.txt
    return model, tokenizer
