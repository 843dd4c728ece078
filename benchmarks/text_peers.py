"""The systems benchmarks/text.py compares, each as a factory returning run(prompts, new_tokens)
that generates greedily, exactly new_tokens per prompt, or None (with a line saying why)
when the system is not installed. Every one runs the same weights, from the files of
text_models.py; each factory is called in a worker process of its own (text_workers.py)
and only loads: files are converted beforehand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def skipped(name: str, error: ImportError) -> None:
    print(f"  {name}: skipped ({error.name} is not installed)", flush=True)


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
    """Stock onnxruntime on an exported graph and its KV cache: the loop a user writes
    (numpy in and out at every step; device "cuda": the CUDA provider, None where absent).
    The int8 peer runs it on the graph of ort_int8_graph.py, which gives logits of the last
    position only: the loop reads logits[:, -1] of either."""
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


def ctranslate2_generator(model_dir: Path, compute_type: str, threads: int):
    """CTranslate2 on its converted folder (converting imports torch: done beforehand)."""
    try:
        import ctranslate2
    except ImportError as error:
        return skipped(f"CTranslate2 {compute_type}", error)
    generator = ctranslate2.Generator(str(model_dir), device="cpu", compute_type=compute_type, intra_threads=threads)
    vocabulary = json.loads((model_dir / "vocabulary.json").read_text())

    def run(prompts: list[list[int]], new_tokens: int) -> None:
        tokens = [[vocabulary[i] for i in prompt] for prompt in prompts]
        results = generator.generate_batch(tokens, max_length=new_tokens, min_length=new_tokens, sampling_topk=1,
                                           include_prompt_in_result=False, end_token=[])
        assert all(len(r.sequences_ids[0]) == new_tokens for r in results)
    return run


def aigc_engine(onnx_path: Path, backend: str, dtype: str, max_batch: int, device: str = "cpu",
                kv_dtype: str = "float32"):
    """run.weight_bytes: the bytes of weights the native backend reads per step (None for
    the onnxruntime backend), for the share-of-roofline column."""
    from aigc_engine import SamplingParams, TextGenerator

    options = {"dtype": dtype, "kv_dtype": kv_dtype} if backend == "native" else {}
    generator = TextGenerator.load(str(onnx_path), backend=backend, max_batch_size=max_batch, device=device,
                                   **options)

    def run(prompts: list[list[int]], new_tokens: int) -> None:
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        completions = generator.generate(prompts, params)
        assert all(len(c.token_ids) == new_tokens for c in completions), completions[0].error
    run.weight_bytes = generator._model.model.weight_bytes if backend == "native" else None
    return run
