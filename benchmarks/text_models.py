"""The model files benchmarks/text.py measures, built once into the cache: for each model
aigc_engine's ONNX file (which the onnxruntime peers run too), the same weights as a Hugging
Face GPT-2 folder, CTranslate2's conversions of that folder and the int8 graph of
ort_int8_graph.py. Building them imports torch (transformers, CTranslate2's converter), so
text.py calls prepare() in a process of its own, before any timed worker starts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from text_peers import skipped


@dataclass
class ModelFiles:
    onnx: Path  # aigc_engine's file
    hf: Path | None = None  # None: transformers or torch is missing
    ort_int8: Path | None = None  # None: onnxruntime.quantization is missing
    ct2: dict[str, Path] = field(default_factory=dict)  # compute type → folder; empty without CTranslate2


def config_and_tokenizer(onnx_path: Path) -> tuple[dict, str]:
    """The aigc.config and aigc.tokenizer metadata of an aigc_engine ONNX file."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return json.loads(meta["aigc.config"]), meta["aigc.tokenizer"]


def full_vocab_tokenizer_json(tokenizer_json: str, vocab_size: int) -> str:
    """The tokenizer padded with never-produced filler tokens up to the model's vocab_size,
    which CTranslate2's converter requires (one vocabulary entry per embedding row)."""
    data = json.loads(tokenizer_json)
    vocab = data["model"]["vocab"]
    added = data.get("added_tokens", [])
    taken = set(vocab) | {t["content"] for t in added}
    next_id, i = 1 + max(list(vocab.values()) + [t["id"] for t in added]), 0
    while next_id < vocab_size:
        token = f"\u0120filler{i}"
        i += 1
        if token not in taken:
            vocab[token] = next_id
            next_id += 1
    return json.dumps(data)


def hf_directory_from_onnx(onnx_path: Path, out: Path) -> Path:
    """A Hugging Face GPT-2 directory with the ONNX file's weights (same GPT-2 names)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from transformers import GPT2Config, GPT2LMHeadModel

    c, tokenizer_json = config_and_tokenizer(onnx_path)
    config = GPT2Config(vocab_size=c["vocab_size"], n_positions=c["n_positions"], n_embd=c["n_embd"],
                        n_layer=c["n_layer"], n_head=c["n_head"], layer_norm_epsilon=c.get("layer_norm_epsilon", 1e-5),
                        eos_token_id=c["eos_token_id"], bos_token_id=c["eos_token_id"])
    hf = GPT2LMHeadModel(config)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(str(onnx_path)).graph.initializer}
    state = {name: weights.get(name, weights["transformer.wte.weight"]) for name in hf.state_dict()
             if not name.endswith((".attn.bias", ".attn.masked_bias"))}
    hf.load_state_dict(state, strict=False)
    hf.save_pretrained(out)
    (out / "tokenizer.json").write_text(full_vocab_tokenizer_json(tokenizer_json, c["vocab_size"]))
    return out


def random_gpt2_small(out: Path, tokenizer_json: str) -> Path:
    """GPT-2-small-shaped (124M), random init with seed 0, saved with save_pretrained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config()  # 12 layers, 12 heads, 768 wide, 1024 positions, 50257 tokens
    config.eos_token_id = config.bos_token_id = 0
    GPT2LMHeadModel(config).save_pretrained(out)
    (out / "tokenizer.json").write_text(full_vocab_tokenizer_json(tokenizer_json, config.vocab_size))
    return out


def modified(path: Path) -> float:
    """A file's time, or the newest of a folder's files (rewriting them leaves the folder's own)."""
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*")), default=path.stat().st_mtime)
    return path.stat().st_mtime


def stale(out: Path, source: Path) -> bool:
    return not out.exists() or modified(out) < modified(source)


def shipped_hf(onnx_path: Path, cache: Path) -> Path | None:
    hf_dir = cache / f"{onnx_path.stem}-hf"
    try:
        if stale(hf_dir, onnx_path):
            hf_directory_from_onnx(onnx_path, hf_dir)
    except ImportError as error:
        return skipped(f"the Hugging Face copy of {onnx_path.stem}", error)
    return hf_dir


def gpt2_small(cache: Path, tokenizer_json: str) -> tuple[Path, Path] | None:
    """(ONNX file, HF directory) of the random GPT-2-small, built once into the cache."""
    hf_dir, onnx_path = cache / "gpt2-small-random", cache / "gpt2-small-random.onnx"
    try:
        if not hf_dir.is_dir():
            random_gpt2_small(hf_dir, tokenizer_json)
        if not onnx_path.is_file():
            from aigc_engine.artifacts.hf_import import import_hf
            print("  importing gpt2-small (once)...", flush=True)
            import_hf(hf_dir, onnx_path)
    except ImportError as error:
        return skipped("gpt2-small", error)
    return onnx_path, hf_dir


def ort_int8(onnx_path: Path, cache: Path) -> Path | None:
    from ort_int8_graph import quantize_last_position_head

    out = cache / f"{onnx_path.stem}.ort-int8-last-head.onnx"  # not the name of the plain graph's, built before
    try:
        if stale(out, onnx_path):
            quantize_last_position_head(onnx_path, out)
    except ImportError as error:
        return skipped("onnxruntime int8", error)
    return out


def ctranslate2_models(hf_dir: Path, cache: Path) -> dict[str, Path]:
    try:
        from ctranslate2.converters import TransformersConverter
    except ImportError as error:
        skipped("CTranslate2", error)
        return {}
    found = {}
    for compute_type in ("float32", "int8"):
        out = found[compute_type] = cache / f"{hf_dir.name}.ct2-{compute_type}"
        if stale(out, hf_dir):
            TransformersConverter(str(hf_dir)).convert(str(out), quantization=compute_type, force=True)
    return found


def files_of(onnx_path: Path, hf_dir: Path | None, cache: Path) -> ModelFiles:
    return ModelFiles(onnx_path, hf_dir, ort_int8(onnx_path, cache), ctranslate2_models(hf_dir, cache) if hf_dir else {})


def prepare(cache: Path, with_gpt2_small: bool) -> dict[str, ModelFiles]:
    """The files of pycode-gpt, and of gpt2-small where with_gpt2_small, built where missing."""
    from aigc_engine.artifacts.registry import MODELS_DIR

    shipped = MODELS_DIR / "pycode-gpt.onnx"
    models = {"pycode-gpt": files_of(shipped, shipped_hf(shipped, cache), cache)}
    if with_gpt2_small and (found := gpt2_small(cache, config_and_tokenizer(shipped)[1])):
        models["gpt2-small"] = files_of(*found, cache)
    return models
