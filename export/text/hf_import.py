# Import a Hugging Face GPT-2 checkpoint folder, offline: config.json (model_type gpt2),
# weights from model.safetensors (or its sharded index) or pytorch_model.bin, tokenizer
# from tokenizer.json or vocab.json + merges.txt, chat template (if any) from chat_template.jinja or
# tokenizer_config.json. Our GPT keeps GPT-2's parameter names
# and Conv1D (in, out) layout, so loading is a checked loop over names and shapes; the
# result goes through the same verified export as a trained model.
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from aigc_engine.text.chat_template import hf_chat_template

from ..models import build_model
from .export import export_text_model
from .tokenizer import EOS, load_hf_tokenizer

_IGNORED = re.compile(r"\.attn\.(bias|masked_bias)$")  # HF's causal-mask buffers, not weights
_CONFIG_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon")
_SHOWN = 6  # names listed per kind of mismatch in an error


def import_hf(directory: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert the GPT-2 checkpoint in `directory` to our ONNX file at `out`; returns the path."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    config = read_gpt2_config(directory)
    tokenizer = load_hf_tokenizer(directory)
    if tokenizer.get_vocab_size() > config["vocab_size"]:
        raise ValueError(f"{directory}: the tokenizer has {tokenizer.get_vocab_size()} tokens, more than the "
                         f"model's vocab_size {config['vocab_size']}")
    if config["eos_token_id"] is None:
        config["eos_token_id"] = tokenizer.token_to_id(EOS)
    if config["eos_token_id"] is None:
        raise ValueError(f"{directory}: config.json has no eos_token_id and the tokenizer no {EOS} token")
    model = build_model("gpt", config)
    load_gpt2_weights(model, read_weights(directory), directory)
    provenance = {"dataset": f"Hugging Face checkpoint {directory.resolve().name}", "steps": None,
                  "imported_from": str(directory.resolve()), "quality": None}
    return export_text_model(model, "gpt", tokenizer.to_str(), provenance, out, hf_chat_template(directory))


def read_gpt2_config(directory: Path) -> dict:
    """config.json → our gpt config; options our graph does not implement are errors."""
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
        kind = hf.get("model_type") if isinstance(hf, dict) else None
        raise ValueError(f"{path}: model_type is {kind!r}; only 'gpt2' checkpoints can be imported")
    unsupported = {
        "activation_function": hf.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"),
        "n_inner": hf.get("n_inner") in (None, 4 * hf.get("n_embd", 0)),
        "scale_attn_weights": hf.get("scale_attn_weights", True) is True,
        "scale_attn_by_inverse_layer_idx": not hf.get("scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention": not hf.get("add_cross_attention", False),
        "tie_word_embeddings": hf.get("tie_word_embeddings", True) is True,
    }
    bad = [f"{key}={hf.get(key)!r}" for key, ok in unsupported.items() if not ok]
    if bad:
        raise ValueError(f"{path}: unsupported GPT-2 options {', '.join(bad)} (the graph is GPT-2's own: "
                         "tanh GELU, 4×n_embd MLP, 1/√head_dim attention scale, tied embeddings)")
    defaults = {"n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "layer_norm_epsilon": 1e-5}
    missing = [k for k in _CONFIG_KEYS if k not in hf and k not in defaults]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    config = {k: hf.get(k, defaults.get(k)) for k in _CONFIG_KEYS}
    config["layer_norm_epsilon"] = float(config["layer_norm_epsilon"])
    config["eos_token_id"] = hf.get("eos_token_id")
    return config


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The state dict in model.safetensors (single or sharded) or pytorch_model.bin."""
    single, index, pickled = (directory / "model.safetensors", directory / "model.safetensors.index.json",
                              directory / "pytorch_model.bin")
    if single.is_file() or index.is_file():
        from safetensors.torch import load_file

        if single.is_file():
            return load_file(str(single))
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(directory / shard)).items()}
    if pickled.is_file():
        return torch.load(pickled, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory}: no weights (expected model.safetensors or pytorch_model.bin)")


def load_gpt2_weights(model, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Copy GPT-2 weights into `model` by name; any missing, unexpected or mis-shaped key is an error."""
    weights = {k: v for k, v in weights.items() if not _IGNORED.search(k)}
    if not any(k.startswith("transformer.") for k in weights):  # saved from GPT2Model, not the LM head model
        weights = {f"transformer.{k}": v for k, v in weights.items()}
        weights.pop("transformer.lm_head.weight", None)
    head = weights.pop("lm_head.weight", None)
    wte = weights.get("transformer.wte.weight")
    if head is not None and wte is not None and not torch.equal(head, wte):
        raise ValueError(f"{source}: lm_head.weight differs from transformer.wte.weight; only GPT-2 with tied "
                         "embeddings can be imported")
    ours = model.state_dict()
    missing = sorted(set(ours) - set(weights))
    unexpected = sorted(set(weights) - set(ours))
    wrong = [f"{k} {tuple(weights[k].shape)} (config needs {tuple(ours[k].shape)})"
             for k in sorted(set(ours) & set(weights)) if weights[k].shape != ours[k].shape]
    problems = [f"{what} {len(keys)}: {', '.join(keys[:_SHOWN])}{', …' if len(keys) > _SHOWN else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise ValueError(f"{source}: the weights do not fit config.json's GPT-2 — {'; '.join(problems)}")
    with torch.no_grad():
        for key, tensor in ours.items():
            tensor.copy_(weights[key].to(torch.float32))
