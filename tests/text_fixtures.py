"""Tiny GPT and LSTM language models, trained by no one: random weights large enough to
give varied tokens, exported by aigc_export with a small tokenizer — for runtime tests."""

from __future__ import annotations

from pathlib import Path

import torch

import aigc_export

CONFIGS = {
    "gpt": {"vocab_size": 300, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4},
    "lstm": {"vocab_size": 300, "n_embd": 16, "hidden_size": 24, "n_layer": 2},
}
TEXTS = ["def add(a, b):\n    return a + b\n", "héllo wörld — naïve café 😀 🐍 中文 テキスト\n",
         "class Point:\n    x: int = 0\n    y: int = 0\n"] * 4


def export_tiny(folder: Path, family: str, seed: int = 0, chat_template: dict | None = None,
                name: str | None = None, prompt_prefix: str = "") -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(seed)
    model = aigc_export.build_model(family, CONFIGS[family]).eval()
    with torch.no_grad():  # sharper, more varied distributions than the initialisation's
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokenizer = aigc_export.train_tokenizer(TEXTS, CONFIGS[family]["vocab_size"])
    path = aigc_export.export_text_model(model, family, tokenizer.to_str(), {"dataset": "tiny", "steps": 0},
                                         folder / f"{name or 'tiny-' + family}.onnx", chat_template, prompt_prefix)
    return model, path


@torch.no_grad()
def torch_logits(model: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
    """Next-token logits after `tokens`, the whole sequence recomputed (no cache)."""
    return model.loss_logits(torch.tensor([tokens]))[0, -1]


def torch_greedy(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(torch_logits(model, tokens).argmax()))
    return tokens[len(prompt):]
