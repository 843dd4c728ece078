"""Reading a Hugging Face GPT-2 folder, without torch: config.json (model_type gpt2) as
our gpt config, the weights as float32 numpy arrays by their GPT-2 names, and the tokenizer.

Weights come from model.safetensors (or its sharded index), else from pytorch_model.bin
where torch happens to be installed. GPT-2's Conv1D keeps weights (in, out), the layout
our graph and the native decoder read, so loading is a checked loop over names and
shapes, not a translation table. Options the graph does not implement are errors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from ..errors import ModelFileError
from .safetensors_file import read_safetensors
from .weights import gpt_weight_shapes

EOS = "<|endoftext|>"
FOLDER_HOLDS = ("a model folder holds a Hugging Face GPT-2 checkpoint: config.json (model_type gpt2), "
                "model.safetensors (or model.safetensors.index.json and its shards, or pytorch_model.bin) and "
                "tokenizer.json (or vocab.json + merges.txt)")
_IGNORED = re.compile(r"\.attn\.(bias|masked_bias)$")  # HF's causal-mask buffers, not weights
_CONFIG_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon")
_DEFAULTS = {"n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "layer_norm_epsilon": 1e-5}
_SHOWN = 6  # names listed per kind of mismatch in an error


def _missing(directory: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{directory}: no {what}; {FOLDER_HOLDS}")


def weight_files(directory: Path) -> list[Path]:
    """The files the weights are read from: the safetensors file, or the index then its
    shards, or pytorch_model.bin."""
    single, index, pickled = (directory / "model.safetensors", directory / "model.safetensors.index.json",
                              directory / "pytorch_model.bin")
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelFileError(f"{index}: not a safetensors index (no JSON 'weight_map' of names to "
                                 "files)") from None
        paths = [directory / str(shard) for shard in shards]
        absent = [p.name for p in paths if not p.is_file()]
        if absent:
            raise ModelFileError(f"{index}: names shards that are not in the folder: {', '.join(absent[:_SHOWN])}")
        return [index, *paths]
    if pickled.is_file():
        return [pickled]
    raise _missing(directory, "weights (model.safetensors or pytorch_model.bin)")


def tokenizer_files(directory: Path) -> list[Path]:
    """tokenizer.json, else vocab.json and merges.txt."""
    if (directory / "tokenizer.json").is_file():
        return [directory / "tokenizer.json"]
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if vocab.is_file() and merges.is_file():
        return [vocab, merges]
    raise _missing(directory, "tokenizer (tokenizer.json, or vocab.json and merges.txt)")


def config_file(directory: Path) -> Path:
    path = directory / "config.json"
    if not path.is_file():
        raise _missing(directory, "config.json")
    return path


def read_gpt2_config(directory: Path) -> dict:
    """config.json → our gpt config (eos_token_id may be None: the tokenizer's is taken then)."""
    path = config_file(directory)
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
        kind = hf.get("model_type") if isinstance(hf, dict) else None
        raise ModelFileError(f"{path}: model_type is {kind!r}; only 'gpt2' checkpoints can be imported")
    unsupported = {
        "activation_function": hf.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"),
        "n_inner": hf.get("n_inner") in (None, 4 * hf.get("n_embd", _DEFAULTS["n_embd"])),
        "scale_attn_weights": hf.get("scale_attn_weights", True) is True,
        "scale_attn_by_inverse_layer_idx": not hf.get("scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention": not hf.get("add_cross_attention", False),
        "tie_word_embeddings": hf.get("tie_word_embeddings", True) is True,
    }
    bad = [f"{key}={hf.get(key)!r}" for key, ok in unsupported.items() if not ok]
    if bad:
        raise ModelFileError(f"{path}: unsupported GPT-2 options {', '.join(bad)} (the graph is GPT-2's own: "
                             "tanh GELU, 4×n_embd MLP, 1/√head_dim attention scale, tied embeddings)")
    if "vocab_size" not in hf:
        raise ModelFileError(f"{path}: missing vocab_size")
    config = {k: hf.get(k, _DEFAULTS.get(k)) for k in _CONFIG_KEYS}
    config["eos_token_id"] = hf.get("eos_token_id")
    _check_sizes(path, config)
    config["layer_norm_epsilon"] = float(config["layer_norm_epsilon"])
    return config


def _check_sizes(path: Path, config: dict) -> None:
    for key in (*_CONFIG_KEYS[:5], "eos_token_id"):
        value = config[key]
        if key == "eos_token_id" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "eos_token_id" else 1):
            raise ModelFileError(f"{path}: {key} must be a {'non-negative' if key == 'eos_token_id' else 'positive'} "
                                 f"integer, got {value!r}")
    if config["n_embd"] % config["n_head"]:
        raise ModelFileError(f"{path}: n_embd {config['n_embd']} is not divisible by n_head {config['n_head']}")
    epsilon = config["layer_norm_epsilon"]
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon <= 1:
        raise ModelFileError(f"{path}: layer_norm_epsilon must be a number in (0, 1], got {epsilon!r}")
    eos = config["eos_token_id"]
    if eos is not None and eos >= config["vocab_size"]:
        raise ModelFileError(f"{path}: eos_token_id {eos} is outside the vocabulary (vocab_size "
                             f"{config['vocab_size']})")


def load_hf_tokenizer(directory: Path) -> Tokenizer:
    """A Hugging Face GPT-2 tokenizer from tokenizer.json, else vocab.json + merges.txt."""
    files = tokenizer_files(Path(directory))
    try:
        if len(files) == 1:
            return Tokenizer.from_file(str(files[0]))
        vocab, merges = files
        tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        has_eos = EOS in json.loads(vocab.read_text(encoding="utf-8"))
    except Exception as error:  # noqa: BLE001 — tokenizers raises bare Exception on a malformed file
        raise ModelFileError(f"{directory}: cannot read the tokenizer ({', '.join(f.name for f in files)}: "
                             f"{error})") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    if has_eos:
        tokenizer.add_special_tokens([EOS])
    return tokenizer


def read_weights(directory: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors by name, as stored (safetensors) or as float32 (pytorch_model.bin)."""
    files = weight_files(directory)
    if files[0].name == "pytorch_model.bin":
        return _read_pickled(files[0])
    shards = files[1:] if files[0].name.endswith(".index.json") else files
    return {name: array for shard in shards for name, array in read_safetensors(shard).items()}


def _read_pickled(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ModelFileError(f"{path}: reading pytorch_model.bin needs torch, which is not installed; save the "
                             "checkpoint as model.safetensors (transformers' default) or install torch") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 — unpickling raises many kinds; each means an unreadable file
        raise ModelFileError(f"{path}: cannot read the state dict ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: not a state dict of tensors")
    return {name: tensor.detach().to(torch.float32).numpy() for name, tensor in state.items()}


def gpt2_weights(weights: dict[str, np.ndarray], config: dict, source: Path) -> dict[str, np.ndarray]:
    """GPT-2's weights by our names as float32; any missing, unexpected or mis-shaped key is an error."""
    weights = {k: v for k, v in weights.items() if not _IGNORED.search(k)}
    if not any(k.startswith("transformer.") for k in weights):  # saved from GPT2Model, not the LM head model
        weights = {f"transformer.{k}": v for k, v in weights.items()}
        weights.pop("transformer.lm_head.weight", None)
    head = weights.pop("lm_head.weight", None)
    wte = weights.get("transformer.wte.weight")
    if head is not None and wte is not None and not np.array_equal(head, wte):
        raise ModelFileError(f"{source}: lm_head.weight differs from transformer.wte.weight; only GPT-2 with tied "
                             "embeddings can be imported")
    ours = gpt_weight_shapes(config)
    missing = sorted(set(ours) - set(weights))
    unexpected = sorted(set(weights) - set(ours))
    wrong = [f"{k} {tuple(weights[k].shape)} (config needs {ours[k]})"
             for k in sorted(set(ours) & set(weights)) if tuple(weights[k].shape) != ours[k]]
    problems = [f"{what} {len(keys)}: {', '.join(keys[:_SHOWN])}{', …' if len(keys) > _SHOWN else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise ModelFileError(f"{source}: the weights do not fit config.json's GPT-2 — {'; '.join(problems)}")
    not_float = sorted(k for k in ours if weights[k].dtype.kind != "f")
    if not_float:
        raise ModelFileError(f"{source}: weight {not_float[0]} is {weights[not_float[0]].dtype}, not floating point")
    return {k: np.ascontiguousarray(weights[k], dtype=np.float32) for k in ours}
