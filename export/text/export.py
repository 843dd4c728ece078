# Export a text model to ONE ONNX file with its tokenizer inside (metadata aigc.tokenizer).
# gpt:  input_ids, position_ids (B, T) int64, attention_mask (B, P+T) int64 (1 = attend),
#       past.{i}.key/value (B, n_head, P, head_dim) → logits (B, T, vocab), present.{i}.*
#       (B, n_head, P+T, head_dim); P = 0 is the prefill. Initializers keep GPT-2's names.
# lstm: input_ids (B, T), past.h, past.c (n_layer, B, hidden) → logits, present.h, present.c.
#       Initializers keep the torch names (embedding.weight, lstm.weight_ih_l0, head.weight, …).
# Published only after onnx.checker and torch-vs-onnxruntime parity over prefill + 20 steps.
# Graph I/O names and metadata keys: aigc_engine.artifacts.schema.
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from aigc_engine.artifacts.schema import (GPT_INPUTS, LOGITS, LSTM_INPUTS, LSTM_OUTPUTS, META_CHAT_TEMPLATE,
                                          META_TOKENIZER, gpt_past_names, gpt_present_names)

from ..common.checkpoint import load_checkpoint
from ..common.fileio import atomic_write
from ..common.onnx_export import (ExportVerificationError, checked_blob, compare_outputs, metadata_props, session,
                                  stamp, trace_to_onnx)
from ..models import build_model
from .quality_probe import stamp_parse_rate

# What `aigc train` models read before every prompt (config "prompt_prefix", see
# aigc_engine/text/generator.py): a prompt starts a line. Trained on random windows, the model
# saw every line start after a newline; given a bare `def` it cannot tell and often glues a
# name to it (`deff(f):`, `define(name)`): README, "Text models", has the measurements.
DEFAULT_PROMPT_PREFIX = "\n"
VERIFY_STEPS = 20  # incremental decode steps checked after the prefill
VERIFY_PROMPTS = (7, 4)  # a batch of two prompts, the shorter one left-padded


def gpt_io_names(n_layer: int) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of a GPT graph of n_layer layers, in order."""
    return [*GPT_INPUTS, *gpt_past_names(n_layer)], [LOGITS, *gpt_present_names(n_layer)]


def export_text_model(model: nn.Module, family: str, tokenizer_json: str, provenance: dict,
                      out_path: str | os.PathLike, chat_template: dict | None = None, prompt_prefix: str = "") -> Path:
    """Export a GPT or LSTM (any mode; exported in eval) with its tokenizer; returns the path.

    provenance: dataset, steps, seed, … and quality (held-out loss, perplexity, bits per
    byte, or None); torch_version and exported_at are stamped here. chat_template: the
    `aigc.chat_template` metadata ({"template", "special_tokens"}), if the model has one.
    prompt_prefix: text the runtime puts before every prompt (none when empty).
    """
    model = model.eval()
    config = {**model.config, **({"prompt_prefix": prompt_prefix} if prompt_prefix else {})}
    provenance = stamp({"quality": None, **provenance})
    metadata = {**metadata_props(family, config, provenance, describe(family, config, provenance)),
                META_TOKENIZER: tokenizer_json}
    if chat_template is not None:
        metadata[META_CHAT_TEMPLATE] = json.dumps(chat_template, ensure_ascii=False)
    proto = _trace_gpt(model) if family == "gpt" else _trace_lstm(model)
    blob = checked_blob(proto, metadata, out_path)
    (_verify_gpt if family == "gpt" else _verify_lstm)(model, blob)
    return atomic_write(out_path, lambda f: f.write(blob))


def export_text_checkpoint(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, *,
                           parse_samples: int | None = None) -> Path:
    """Export a text model's training checkpoint (file or folder) to `out_path`, verified."""
    return export_trained_text(load_checkpoint(checkpoint_path), out_path, parse_samples=parse_samples)


def export_trained_text(state: dict, out_path: str | os.PathLike, *, parse_samples: int | None = None) -> Path:
    """Export a text model from its training checkpoint `state` (as load_checkpoint gives it).

    Its quality is the held-out figures the training loop measured; parse_samples > 0 adds
    the parse rate of that many samples of the exported file (quality_probe; None: the
    default for the checkpoint's dataset, 100 for Python source, else none).
    """
    model = build_model(state["family"], state["config"])
    model.load_state_dict(state["model"])
    provenance = {"dataset": state["dataset"], "steps": state["step"], "seed": state["seed"],
                  "batch_size": state["batch_size"], "seq_len": state["seq_len"], "lr": state["lr"],
                  "warmup": state["warmup"], "final_loss": None if state["loss"] is None else round(state["loss"], 4),
                  "corpus": state["corpus"], "quality": state["quality"]}
    out = export_text_model(model, state["family"], state["tokenizer"], provenance, out_path,
                            prompt_prefix=DEFAULT_PROMPT_PREFIX)
    stamp_parse_rate(out, state["quality"], state["dataset"], parse_samples)
    return out


def describe(family: str, config: dict, provenance: dict) -> str:
    """One human line, e.g. 'GPT, 4 layers × 8 heads, 256-d, context 256, vocab 4096, trained 3000 steps on …'."""
    if family == "gpt":
        sizes = (f"GPT, {config['n_layer']} layers × {config['n_head']} heads, {config['n_embd']}-d, "
                 f"context {config['n_positions']}")
    else:
        sizes = f"LSTM, {config['n_layer']} layers × {config['hidden_size']} units, {config['n_embd']}-d embedding"
    return (f"{sizes}, vocab {config['vocab_size']}, trained {provenance.get('steps', '?')} steps on "
            f"{provenance.get('dataset', 'unknown data')}")


def _trace_gpt(model) -> onnx.ModelProto:
    # Dim.AUTO everywhere: P + T is not expressible as a torch.export Dim of its own, and the
    # exporter works out that the mask is P + T long. Example sizes ≥ 2: torch.export
    # specialises 0 and 1, yet the graph it gives runs with P = 0 and T = 1 (verified below).
    c = model.config
    inputs, outputs = gpt_io_names(c["n_layer"])
    head_dim = c["n_embd"] // c["n_head"]
    example = (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long),
               torch.ones(2, 5, dtype=torch.long),
               [torch.zeros(2, c["n_head"], 2, head_dim) for _ in range(2 * c["n_layer"])])  # distinct: aliased
    # example inputs would be traced as one input
    auto = torch.export.Dim.AUTO
    dynamic = ({0: auto, 1: auto}, {0: auto, 1: auto}, {0: auto, 1: auto}, [{0: auto, 2: auto}] * (2 * c["n_layer"]))
    proto = trace_to_onnx(model, example, inputs, outputs, dynamic, keep_parameter_names=True)
    input_ids, position_ids, attention_mask = GPT_INPUTS
    dims = {input_ids: ("batch", "sequence"), position_ids: ("batch", "sequence"),
            attention_mask: ("batch", "total_sequence"), LOGITS: ("batch", "sequence", c["vocab_size"])}
    for name in inputs[3:]:
        dims[name] = ("batch", c["n_head"], "past_sequence", head_dim)
    for name in outputs[1:]:
        dims[name] = ("batch", c["n_head"], "total_sequence", head_dim)
    return _name_dims(proto, dims)


def _trace_lstm(model) -> onnx.ModelProto:
    # The exporter emits ONNX LSTM ops but stamps logits' sequence axis with the example's
    # length (3) although the graph runs at any length: _name_dims puts the name back.
    # Parameter names kept too (embedding.weight, lstm.weight_ih_l0, head.weight, …): the
    # gate reordering into ONNX's W/R/B stays in the graph (onnxruntime folds it at load),
    # and the file's names no longer depend on the exporter's counter (val_22, …).
    c = model.config
    state = (c["n_layer"], 2, c["hidden_size"])
    example = (torch.zeros(2, 3, dtype=torch.long), torch.zeros(state), torch.zeros(state))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    proto = trace_to_onnx(model, example, list(LSTM_INPUTS), list(LSTM_OUTPUTS),
                          ({0: batch, 1: seq}, {1: batch}, {1: batch}), keep_parameter_names=True)
    input_ids, past_h, past_c = LSTM_INPUTS
    logits, present_h, present_c = LSTM_OUTPUTS
    state_dims = (c["n_layer"], "batch", c["hidden_size"])
    return _name_dims(proto, {input_ids: ("batch", "sequence"), logits: ("batch", "sequence", c["vocab_size"]),
                              past_h: state_dims, past_c: state_dims, present_h: state_dims, present_c: state_dims})


def _name_dims(proto: onnx.ModelProto, dims: dict) -> onnx.ModelProto:
    # The exporter names symbolic axes s10, s70 + s89, …: give the graph's inputs and
    # outputs readable, shared names (every past has the same P, every present P + T).
    # The intermediate shapes go: some hold the LSTM example's length, and onnxruntime
    # infers them again when it loads the file.
    del proto.graph.value_info[:]
    for value in list(proto.graph.input) + list(proto.graph.output):
        shape = value.type.tensor_type.shape
        if value.name not in dims or len(shape.dim) != len(dims[value.name]):
            raise ExportVerificationError(f"exported graph: {value.name!r} is missing or has rank "
                                          f"{len(shape.dim)}, expected {dims.get(value.name)}")
        for dim, want in zip(shape.dim, dims[value.name]):
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want
    return proto


def _verify_gpt(model, blob: bytes) -> None:
    # A batch of 2 prompts of VERIFY_PROMPTS tokens, the shorter left-padded (mask 0, positions
    # count real tokens only: GPT-2's convention), prefilled with P = 0, then VERIFY_STEPS
    # greedy steps; torch and onnxruntime each feed their own presents back as the past.
    c = model.config
    inputs, outputs = gpt_io_names(c["n_layer"])
    longest = max(1, min(max(VERIFY_PROMPTS), c["n_positions"] - VERIFY_STEPS))
    steps = min(VERIFY_STEPS, c["n_positions"] - longest)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, c["vocab_size"], (2, longest), dtype=np.int64)
    mask = np.ones((2, longest), dtype=np.int64)
    mask[1, :longest - min(longest, min(VERIFY_PROMPTS))] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    ort_session = session(blob)
    ort_past = torch_past = [np.zeros((2, c["n_head"], 0, c["n_embd"] // c["n_head"]), np.float32)] * (2 * c["n_layer"])
    for step in range(steps + 1):
        feeds = dict(zip(inputs, [ids, positions, mask, *ort_past]))
        got = ort_session.run(None, feeds)
        with torch.no_grad():
            logits, presents = model(*(torch.from_numpy(a) for a in (ids, positions, mask)),
                                     [torch.from_numpy(p) for p in torch_past])
        want = [logits.numpy(), *(p.numpy() for p in presents)]
        where = "the prefill" if step == 0 else f"decode step {step}"
        real = mask[:, -ids.shape[1]:].astype(bool)  # a padding position's logits are never used
        compare_outputs(outputs[:1], [want[0][real]], [got[0][real]], where)
        compare_outputs(outputs[1:], want[1:], got[1:], where)
        ort_past, torch_past = got[1:], want[1:]
        ids = want[0][:, -1].argmax(-1)[:, None].astype(np.int64)
        positions = positions[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)


def _verify_lstm(model, blob: bytes) -> None:
    c = model.config
    rng = np.random.default_rng(0)
    ids = rng.integers(0, c["vocab_size"], (2, max(VERIFY_PROMPTS)), dtype=np.int64)
    zero = np.zeros((c["n_layer"], 2, c["hidden_size"]), np.float32)
    ort_state = torch_state = [zero, zero]
    ort_session = session(blob)
    for step in range(VERIFY_STEPS + 1):
        got = ort_session.run(None, dict(zip(LSTM_INPUTS, [ids, *ort_state])))
        with torch.no_grad():
            want = [t.numpy() for t in model(*(torch.from_numpy(a) for a in (ids, *torch_state)))]
        compare_outputs(LSTM_OUTPUTS, want, got, "the prefill" if step == 0 else f"decode step {step}")
        ort_state, torch_state = got[1:], want[1:]
        ids = want[0][:, -1].argmax(-1)[:, None].astype(np.int64)
