# The text language models. `gpt`: GPT-2's layout and parameter names (pre-LN blocks,
# learned positions, causal multi-head attention, GELU(tanh) MLP, tied embeddings), so a
# Hugging Face GPT-2 state dict loads by a checked loop. `lstm`: embedding → LSTM → linear.
# Tokens are int64 (B, T); logits float32 (B, T, vocab). The KV cache is per layer
# (B, n_head, P, head_dim); the LSTM state (n_layer, B, hidden_size); zero state = start.
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

MIN_VOCAB = 257  # 256 byte tokens of byte-level BPE + <|endoftext|>
TEXT_DEFAULT_CONFIGS = {
    "gpt": {"vocab_size": 4096, "n_positions": 256, "n_embd": 256, "n_layer": 4, "n_head": 8,
            "layer_norm_epsilon": 1e-5, "eos_token_id": 0},
    "lstm": {"vocab_size": 4096, "n_embd": 256, "hidden_size": 384, "n_layer": 2, "eos_token_id": 0},
}
INIT_STD = 0.02  # GPT-2's initializer_range


def check_text_config(family: str, cfg: dict) -> None:
    """Raise ValueError naming the first size that cannot make a model."""
    ints = [k for k in cfg if k not in ("layer_norm_epsilon",)]
    for key in ints:
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < (0 if key == "eos_token_id" else 1):
            raise ValueError(f"{family} config: {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["vocab_size"] < MIN_VOCAB:
        raise ValueError(f"{family} config: vocab_size {cfg['vocab_size']} is too small: byte-level BPE needs "
                         f"at least {MIN_VOCAB} (256 bytes + <|endoftext|>)")
    if cfg["eos_token_id"] >= cfg["vocab_size"]:
        raise ValueError(f"{family} config: eos_token_id {cfg['eos_token_id']} is outside the vocabulary "
                         f"(vocab_size {cfg['vocab_size']})")
    if family == "gpt":
        if cfg["n_embd"] % cfg["n_head"]:
            raise ValueError(f"gpt config: n_embd {cfg['n_embd']} is not divisible by n_head {cfg['n_head']}")
        if not cfg["layer_norm_epsilon"] > 0:
            raise ValueError(f"gpt config: layer_norm_epsilon must be > 0, got {cfg['layer_norm_epsilon']!r}")


def build_text_model(family: str, cfg: dict) -> nn.Module:
    check_text_config(family, cfg)
    return GPT(cfg) if family == "gpt" else LSTMLanguageModel(cfg)


class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored (in, out), y = x @ weight + bias."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).normal_(0.0, INIT_STD))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Attention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.n_head, self.n_embd = cfg["n_head"], cfg["n_embd"]
        self.c_attn = Conv1D(self.n_embd, 3 * self.n_embd)
        self.c_proj = Conv1D(self.n_embd, self.n_embd)

    def forward(self, x, allowed, past_key, past_value):
        # x: (B, T, C); allowed: (B, 1, T, P+T) bool; past_*: (B, H, P, D)
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for y in (q, k, v))
        key, value = torch.cat([past_key, k], dim=2), torch.cat([past_value, v], dim=2)  # (B, H, P+T, D)
        scores = (q @ key.transpose(-1, -2)) * (1.0 / math.sqrt(c // self.n_head))  # (B, H, T, P+T)
        # The float32 minimum, not -inf: a left-padding query sees no key at all, and a row
        # of -inf would make NaNs that leak through 0 × NaN into the real positions' values.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        y = (scores.softmax(-1) @ value).transpose(1, 2).reshape(b, t, c)
        return self.c_proj(y), key, value


class MLP(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.c_fc = Conv1D(cfg["n_embd"], 4 * cfg["n_embd"])
        self.c_proj = Conv1D(4 * cfg["n_embd"], cfg["n_embd"])

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's "gelu_new"


class Block(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg["n_embd"], eps=cfg["layer_norm_epsilon"])
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg["n_embd"], eps=cfg["layer_norm_epsilon"])
        self.mlp = MLP(cfg)

    def forward(self, x, allowed, past_key, past_value):
        a, key, value = self.attn(self.ln_1(x), allowed, past_key, past_value)
        x = x + a
        return x + self.mlp(self.ln_2(x)), key, value


class GPT(nn.Module):
    """GPT-2: `forward` is the cached graph that ships; `loss_logits` the training pass."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg["vocab_size"], cfg["n_embd"]),
            "wpe": nn.Embedding(cfg["n_positions"], cfg["n_embd"]),
            "h": nn.ModuleList(Block(cfg) for _ in range(cfg["n_layer"])),
            "ln_f": nn.LayerNorm(cfg["n_embd"], eps=cfg["layer_norm_epsilon"]),
        })
        nn.init.normal_(self.transformer.wte.weight, 0.0, INIT_STD)
        nn.init.normal_(self.transformer.wpe.weight, 0.0, 0.01)
        for block in self.transformer.h:  # GPT-2's scaling of the residual projections by 1/√(2·n_layer)
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(proj.weight, 0.0, INIT_STD / math.sqrt(2 * cfg["n_layer"]))

    @property
    def export_module(self) -> nn.Module:
        return self

    def empty_past(self, batch: int) -> list[torch.Tensor]:
        """[key_0, value_0, key_1, …]: each (batch, n_head, 0, head_dim)."""
        c = self.config
        return [torch.zeros(batch, c["n_head"], 0, c["n_embd"] // c["n_head"]) for _ in range(2 * c["n_layer"])]

    def forward(self, input_ids, position_ids, attention_mask, past: list[torch.Tensor]):
        # input_ids, position_ids: (B, T) int64; attention_mask: (B, P+T) int64, 1 = attend;
        # past: [key_0, value_0, …] each (B, H, P, D) → logits (B, T, V), presents like past, P+T long
        t, p = input_ids.shape[1], past[0].shape[2]
        causal = torch.arange(t).unsqueeze(1) + p >= torch.arange(p + t).unsqueeze(0)  # (T, P+T)
        allowed = causal.unsqueeze(0).unsqueeze(0) & (attention_mask != 0).unsqueeze(1).unsqueeze(2)
        wte = self.transformer.wte.weight
        x = F.embedding(input_ids, wte) + self.transformer.wpe(position_ids)
        presents = []
        for i, block in enumerate(self.transformer.h):
            x, key, value = block(x, allowed, past[2 * i], past[2 * i + 1])
            presents += [key, value]
        return F.linear(self.transformer.ln_f(x), wte), presents

    def loss_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens from the start of a window → (B, T, V) logits, causal, no cache."""
        b, t = input_ids.shape
        if t > self.config["n_positions"]:
            raise ValueError(f"sequence of {t} tokens is longer than n_positions {self.config['n_positions']}")
        positions = torch.arange(t).expand(b, t)
        logits, _ = self(input_ids, positions, torch.ones(b, t, dtype=torch.long), self.empty_past(b))
        return logits


class LSTMLanguageModel(nn.Module):
    """Embedding (V, n_embd) → n_layer LSTM (hidden_size) → Linear head (V)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.config = cfg
        self.embedding = nn.Embedding(cfg["vocab_size"], cfg["n_embd"])
        self.lstm = nn.LSTM(cfg["n_embd"], cfg["hidden_size"], cfg["n_layer"], batch_first=True)
        self.head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"])

    @property
    def export_module(self) -> nn.Module:
        return self

    def zero_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.config["n_layer"], batch, self.config["hidden_size"])
        return torch.zeros(shape), torch.zeros(shape)

    def forward(self, input_ids, past_h, past_c):
        # input_ids (B, T) int64; past_h, past_c (n_layer, B, hidden) → logits (B, T, V), h, c
        y, (h, c) = self.lstm(self.embedding(input_ids), (past_h, past_c))
        return self.head(y), h, c

    def loss_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits, _, _ = self(input_ids, *self.zero_state(input_ids.shape[0]))
        return logits
