# One training loop for the language models (gpt, lstm): next-token cross-entropy on
# random (B, seq_len + 1) windows of the train tokens, AdamW, linear warm-up then cosine
# decay to 10% of lr, gradient clipping at 1.0, held-out loss every eval_every steps
# (perplexity, bits per byte), atomic checkpoints with exact resume, a tqdm bar, seeded:
# batch offsets are a pure function of (seed, step). At the end, a verified ONNX export.
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

from aigc_engine.artifacts.schema import TEXT_FAMILIES

from ..common.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from ..common.onnx_export import read_provenance
from ..common.distributed import (barrier, broadcast_from_main, check_batch_divisible, mean_over_ranks,
                                  periodic_checkpoint, shard, world, wrap)
from ..common.training import EMA, set_threads_from_env
from ..models import build_model
from .data import (build_corpus, corpus_digest, corpus_files, heldout_windows, random_windows,
                   read_documents, split_documents)
from .export import export_text_checkpoint
from .tokenizer import eos_id, tokenizer_from_json, train_tokenizer

DEFAULT_TEXT_STEPS = 2000
DEFAULT_TEXT_LR = {"gpt": 1e-3, "lstm": 2e-3}
MIN_LR_FRACTION = 0.1  # the cosine ends at lr / 10, not 0: the last steps still learn
GRAD_CLIP = 1.0
WEIGHT_DECAY = 0.1  # on matrices and embeddings only; biases and LayerNorm scales are not decayed
BETAS = (0.9, 0.95)


def lr_at(step: int, lr: float, warmup: int, steps: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr down to MIN_LR_FRACTION × lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_text_model(
    family: str,
    data: str | list[str] | None = None,
    out: str | os.PathLike = "model.onnx",
    *,
    steps: int = DEFAULT_TEXT_STEPS,
    batch_size: int = 16,
    seq_len: int = 128,
    lr: float | None = None,
    warmup: int | None = None,
    vocab_size: int = 4096,
    config: dict | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    eval_every: int | None = None,
    eval_windows: int = 16,
    final_eval_windows: int = 256,
    parse_samples: int | None = None,
    progress: bool = True,
) -> dict:
    """Train `family` ("gpt" or "lstm") on `data` and export it, verified, to `out`.

    data: None for the Python standard library's source, else paths, folders or globs.
    The tokenizer (byte-level BPE of at most vocab_size tokens) learns from the train
    files only; config: model sizes over DEFAULT_CONFIGS[family] (vocab_size and
    eos_token_id come from the tokenizer). lr defaults to DEFAULT_TEXT_LR[family];
    warmup to steps // 10 (at most 200); eval_every to steps // 10. Held-out loss is
    measured on eval_windows windows of seq_len tokens during training and on up to
    final_eval_windows at the end (the number stamped into the file), and the exported file's
    parse rate on parse_samples samples of `def` (None: 100 on the default corpus, Python
    source, and none on other data; text/quality_probe.py).
    Checkpoints: checkpoint_dir/checkpoint.pt (default: `out` with suffix .ckpt) every
    checkpoint_every steps and at the end; resume=True continues from it exactly (same
    family, config, corpus, seed, sizes, lr and steps, else ValueError).
    Returns a summary: family, config, steps, out, checkpoint, seconds, final_loss,
    quality (heldout_loss, perplexity, bits_per_byte), heldout_history [(step, loss)],
    resumed_from, corpus (files, tokens, bytes).
    In a torch.distributed process group (common/launch.py) each rank trains on its rows of
    every batch (batch_size / ranks); rank 0 alone measures held-out loss and writes; the
    other ranks return None.
    """
    if family not in TEXT_FAMILIES:
        raise ValueError(f"unknown text family {family!r}: expected one of {', '.join(TEXT_FAMILIES)}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("seq_len", seq_len),
                        ("checkpoint_every", checkpoint_every), ("eval_windows", eval_windows),
                        ("final_eval_windows", final_eval_windows)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    lr = DEFAULT_TEXT_LR[family] if lr is None else lr
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    warmup = min(200, steps // 10) if warmup is None else warmup
    eval_every = max(1, steps // 10) if eval_every is None else eval_every
    if warmup < 0 or eval_every < 1:
        raise ValueError(f"warmup must be ≥ 0 and eval_every ≥ 1, got {warmup} and {eval_every}")
    check_batch_divisible(batch_size, world().size)
    set_threads_from_env()
    main = world().is_main

    name, files = corpus_files(data)
    texts = read_documents(files)
    train_texts, heldout_texts = split_documents(texts)
    digest = corpus_digest(texts)
    out = Path(out)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out.with_suffix(".ckpt")
    found = find_checkpoint(checkpoint_dir) if resume else None
    state = load_checkpoint(found) if found is not None else None
    # Every rank learns the tokenizer (waiting for rank 0 alone could outlast the collective
    # timeout on a large corpus) and all take rank 0's, so that they hold the same vocabulary.
    tokenizer = tokenizer_from_json(state["tokenizer"] if state is not None
                                    else broadcast_from_main(train_tokenizer(train_texts, vocab_size).to_str()))
    corpus = build_corpus(name, train_texts, heldout_texts, tokenizer, digest)
    config = {**(config or {}), "vocab_size": tokenizer.get_vocab_size(), "eos_token_id": eos_id(tokenizer)}
    torch.manual_seed(seed)
    model = build_model(family, config)
    if family == "gpt" and seq_len > model.config["n_positions"]:
        raise ValueError(f"seq_len {seq_len} is longer than the GPT's context n_positions {model.config['n_positions']}")
    optimizer = _adamw(model, lr)
    run = {"family": family, "config": model.config, "dataset": name, "corpus_digest": digest, "seed": seed,
           "batch_size": batch_size, "seq_len": seq_len, "lr": lr, "warmup": warmup, "steps": steps}

    start, ema, history = 0, None, []
    if state is not None:
        mismatched = sorted(key for key, value in run.items() if state.get(key) != value)
        if mismatched:
            raise ValueError(f"cannot resume from {found}: {', '.join(mismatched)} differ from this run's")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start, ema, history = state["step"], state["loss"], [tuple(h) for h in state["heldout_history"]]
    evaluation = heldout_windows(corpus.heldout, seq_len, eval_windows)

    def checkpoint(step: int, quality: dict | None = None) -> Path:
        return save_checkpoint({
            **run, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "loss": ema,
            "heldout_history": history, "rng": torch.get_rng_state(), "tokenizer": tokenizer.to_str(),
            "quality": quality, "corpus": _corpus_stats(corpus),
        }, checkpoint_dir)

    loss_logits = wrap(model, "loss_logits")
    began = time.perf_counter()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {family}",
               disable=not (progress and main))
    postfix = {}
    for step in bar:
        model.train()
        rate = lr_at(step, lr, warmup, steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        window = random_windows(corpus.train, batch_size, seq_len, seed, step)  # (B, T + 1), every rank alike
        loss = _loss(loss_logits, shard(window))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        (loss,) = mean_over_ranks({"loss": loss}).values()
        ema = loss if ema is None else EMA * ema + (1 - EMA) * loss
        if main and ((step + 1) % eval_every == 0 or step + 1 == steps):
            history.append((step + 1, heldout_loss(model, evaluation)))
            postfix["heldout_ppl"] = f"{math.exp(history[-1][1]):.1f}"
        if step % 10 == 0 or step + 1 == steps:
            bar.set_postfix({"loss": f"{ema:.3f}", "lr": f"{rate:.2e}", **postfix}, refresh=False)
        periodic_checkpoint(step + 1, checkpoint_every, steps, checkpoint)
    bar.close()
    seconds = time.perf_counter() - began
    barrier()
    if not main:
        return None

    final_loss = heldout_loss(model, heldout_windows(corpus.heldout, seq_len, final_eval_windows))
    quality = {"heldout_loss": round(final_loss, 4), "perplexity": round(math.exp(final_loss), 3),
               "bits_per_byte": round(corpus.bits_per_byte(final_loss), 4)}
    final = checkpoint(steps, quality)
    export_text_checkpoint(final, out, parse_samples=parse_samples)
    quality = read_provenance(out)["quality"]
    return {"family": family, "config": model.config, "steps": steps, "out": str(out), "checkpoint": str(final),
            "seconds": round(seconds, 2), "final_loss": None if ema is None else round(ema, 4), "quality": quality,
            "heldout_history": [(s, round(v, 4)) for s, v in history], "resumed_from": start if state else None,
            "corpus": _corpus_stats(corpus)}


def _loss(loss_logits, window: torch.Tensor) -> torch.Tensor:
    # window: (B, T + 1); predict tokens 1..T from 0..T-1; mean nats per token
    logits = loss_logits(window[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, chunk: int = 8) -> float:
    """Mean next-token loss (nats) over windows (N, L + 1), evaluated chunk rows at a time."""
    model.eval()
    total = sum(_loss(model.loss_logits, windows[i:i + chunk]).item() * len(windows[i:i + chunk])
                for i in range(0, len(windows), chunk))
    return total / len(windows)


def _adamw(model, lr: float) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=BETAS)


def _corpus_stats(corpus) -> dict:
    return {"files": list(corpus.files), "train_tokens": int(len(corpus.train)),
            "heldout_tokens": int(len(corpus.heldout)), "train_bytes": corpus.train_bytes,
            "heldout_bytes": corpus.heldout_bytes}
