"""The systems benchmarks/text.py compares, each as a factory returning run(prompts, new_tokens)
that generates greedily, exactly new_tokens per prompt, or None (with a line saying why)
when the system is not installed. Every one runs the same weights: a Hugging Face GPT-2
directory and the ONNX file made from it (or the HF directory made from the ONNX file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def skipped(name: str, error: ImportError) -> None:
    print(f"  {name}: skipped ({error.name} is not installed)")


# Model files --------------------------------------------------------------------------

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

    model = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in model.metadata_props}
    c = json.loads(meta["aigc.config"])
    config = GPT2Config(vocab_size=c["vocab_size"], n_positions=c["n_positions"], n_embd=c["n_embd"],
                        n_layer=c["n_layer"], n_head=c["n_head"], layer_norm_epsilon=c.get("layer_norm_epsilon", 1e-5),
                        eos_token_id=c["eos_token_id"], bos_token_id=c["eos_token_id"])
    hf = GPT2LMHeadModel(config)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    state = {name: weights.get(name, weights["transformer.wte.weight"]) for name in hf.state_dict()
             if not name.endswith((".attn.bias", ".attn.masked_bias"))}
    hf.load_state_dict(state, strict=False)
    hf.save_pretrained(out)
    (out / "tokenizer.json").write_text(full_vocab_tokenizer_json(meta["aigc.tokenizer"], c["vocab_size"]))
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


# Systems ------------------------------------------------------------------------------

def hugging_face(hf_dir: Path, threads: int):
    try:
        import torch
        from transformers import GPT2LMHeadModel
    except ImportError as error:
        return skipped("Hugging Face generate", error)
    torch.set_num_threads(threads)
    model = GPT2LMHeadModel.from_pretrained(hf_dir).eval()

    def run(prompts: list[list[int]], new_tokens: int) -> None:
        ids = torch.tensor(prompts)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, pad_token_id=0)
        assert out.shape[1] == ids.shape[1] + new_tokens
    return run


def onnxruntime_plain(onnx_path: Path, threads: int, device: str = "cpu"):
    """Stock onnxruntime on the exported graph and its KV cache: the loop a user writes
    (numpy in and out at every step; device "cuda": the CUDA provider, None where absent)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print("  onnxruntime-gpu: skipped (this onnxruntime has no CUDAExecutionProvider)")
            return None
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=providers)
    past_inputs = [i for i in session.get_inputs() if i.name.startswith("past.")]
    heads, head_dim = past_inputs[0].shape[1], past_inputs[0].shape[3]
    outputs = ["logits"] + [i.name.replace("past.", "present.") for i in past_inputs]

    def run(prompts: list[list[int]], new_tokens: int) -> None:
        batch, length = len(prompts), len(prompts[0])
        ids = np.array(prompts, np.int64)
        past = [np.zeros((batch, heads, 0, head_dim), np.float32)] * len(past_inputs)
        positions = np.tile(np.arange(length), (batch, 1))
        for step in range(new_tokens):
            feeds = {"input_ids": ids, "position_ids": positions,
                     "attention_mask": np.ones((batch, length + step if step else length), np.int64)}
            feeds.update({i.name: p for i, p in zip(past_inputs, past)})
            logits, *past = session.run(outputs, feeds)
            ids = logits[:, -1].argmax(-1).reshape(batch, 1)
            positions = np.full((batch, 1), length + step, np.int64)
    return run


def onnxruntime_int8(onnx_path: Path, cache: Path, threads: int):
    """onnxruntime's own dynamic int8 quantisation of the same graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = cache / f"{onnx_path.stem}.ort-int8.onnx"
    if not out.is_file():
        quantize_dynamic(str(onnx_path), str(out), weight_type=QuantType.QInt8)
    return onnxruntime_plain(out, threads)


def ctranslate2_generator(hf_dir: Path, cache: Path, compute_type: str, threads: int):
    try:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter
    except ImportError as error:
        return skipped(f"CTranslate2 {compute_type}", error)
    out = cache / f"{hf_dir.name}.ct2-{compute_type}"
    if not out.is_dir():
        TransformersConverter(str(hf_dir)).convert(str(out), quantization=compute_type, force=True)
    generator = ctranslate2.Generator(str(out), device="cpu", compute_type=compute_type, intra_threads=threads)
    vocabulary = json.loads((out / "vocabulary.json").read_text())

    def run(prompts: list[list[int]], new_tokens: int) -> None:
        tokens = [[vocabulary[i] for i in prompt] for prompt in prompts]
        results = generator.generate_batch(tokens, max_length=new_tokens, min_length=new_tokens, sampling_topk=1,
                                           include_prompt_in_result=False, end_token=[])
        assert all(len(r.sequences_ids[0]) == new_tokens for r in results)
    return run


def aigc_engine(onnx_path: Path, backend: str, dtype: str, max_batch: int, device: str = "cpu"):
    from aigc_engine import SamplingParams, TextGenerator

    options = {"dtype": dtype} if backend == "native" else {}
    generator = TextGenerator.load(str(onnx_path), backend=backend, max_batch_size=max_batch, device=device,
                                   **options)

    def run(prompts: list[list[int]], new_tokens: int) -> None:
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        completions = generator.generate(prompts, params)
        assert all(len(c.token_ids) == new_tokens for c in completions), completions[0].error
    run.generator = generator
    return run
