# `import_hf` (the runtime's, torch-free) proven against transformers itself:
# GPT2LMHeadModel instances of several configs built from scratch (no download), saved as
# safetensors or pytorch_model.bin with a tokenizer as tokenizer.json or vocab.json +
# merges.txt, imported, then 64 greedy tokens from onnxruntime on the imported file equal
# transformers' generate token for token, and the logits agree within 1e-4. Bad folders
# fail with errors that name the problem.
import json
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import aigc_export  # noqa: E402
from aigc_engine import ModelFileError  # noqa: E402
from aigc_engine.artifacts.hf_import import import_hf  # noqa: E402
from aigc_export.text import export as text_export  # noqa: E402
from hf_fixtures import save_gpt2  # noqa: E402

torch.set_num_threads(1)
CONFIGS = [  # (n_layer, n_head, n_embd, n_positions, safetensors, tokenizer.json)
    (1, 2, 32, 96, True, True),
    (2, 4, 48, 128, False, False),
    (3, 3, 24, 80, True, False),
]


@pytest.mark.parametrize("n_layer, n_head, n_embd, n_positions, safetensors, tokenizer_json", CONFIGS)
def test_import_matches_transformers(tmp_path, n_layer, n_head, n_embd, n_positions, safetensors, tokenizer_json):
    folder = tmp_path / "hf"
    model, tokenizer = save_gpt2(folder, n_layer, n_head, n_embd, n_positions, safetensors, tokenizer_json)
    assert (folder / ("model.safetensors" if safetensors else "pytorch_model.bin")).is_file()
    assert (folder / "vocab.json").is_file() != tokenizer_json
    out = import_hf(folder, tmp_path / "gpt2.onnx")

    proto = onnx.load(out)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["aigc.family"] == "gpt"
    assert json.loads(meta["aigc.config"]) == {"vocab_size": 320, "n_positions": n_positions, "n_embd": n_embd,
                                               "n_layer": n_layer, "n_head": n_head, "layer_norm_epsilon": 1e-5,
                                               "eos_token_id": 0}
    imported = aigc_export.tokenizer_from_json(meta["aigc.tokenizer"])
    prompt_text = "def main():\n    total"
    prompt = tokenizer.encode(prompt_text).ids
    assert imported.encode(prompt_text).ids == prompt
    assert imported.decode(imported.encode("naïve 😀").ids) == "naïve 😀"
    names = {t.name for t in proto.graph.initializer}
    hf_state = model.state_dict()
    assert {k for k in hf_state if not k.endswith(("attn.bias", "attn.masked_bias")) and k != "lm_head.weight"} <= names

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs, _ = text_export.gpt_io_names(n_layer)
    head_dim = n_embd // n_head
    tokens, past, feed = list(prompt), [np.zeros((1, n_head, 0, head_dim), np.float32)] * (2 * n_layer), prompt
    all_logits = []
    for _ in range(64):
        positions = np.arange(len(tokens) - len(feed), len(tokens))[None]
        out_ = session.run(None, dict(zip(inputs, [np.array([feed]), positions, np.ones((1, len(tokens)), np.int64),
                                                    *past])))
        past = out_[1:]
        all_logits.append(out_[0][0])
        tokens.append(int(out_[0][0, -1].argmax()))
        feed = [tokens[-1]]
        if tokens[-1] == 0:  # eos: generate stops there too
            break
    with torch.no_grad():
        generated = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=64, eos_token_id=0,
                                   pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
        reference = model(torch.tensor([tokens[:-1]])).logits[0].numpy()
    assert tokens == generated[0].tolist()
    assert len(tokens) == len(prompt) + 64 and len(set(tokens[len(prompt):])) > 3
    np.testing.assert_allclose(np.concatenate(all_logits), reference, rtol=0, atol=1e-4)


def test_import_of_a_left_padded_batch_matches_transformers(tmp_path):
    folder = tmp_path / "hf"
    model, tokenizer = save_gpt2(folder, 2, 2, 32, 64)
    session = ort.InferenceSession(str(import_hf(folder, tmp_path / "m.onnx")),
                                   providers=["CPUExecutionProvider"])
    inputs, _ = text_export.gpt_io_names(2)
    long, short = tokenizer.encode("for i in range(10):").ids, tokenizer.encode("def").ids
    ids = np.array([long, [0] * (len(long) - len(short)) + short])
    mask = (np.arange(len(long))[None] >= np.array([[0], [len(long) - len(short)]])).astype(np.int64)
    positions = np.maximum(mask.cumsum(1) - 1, 0)
    logits = session.run(None, dict(zip(inputs, [ids, positions, mask, *[np.zeros((2, 2, 0, 16), np.float32)] * 4])))[0]
    with torch.no_grad():
        want = model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     position_ids=torch.from_numpy(positions)).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(logits[real], want[real], rtol=0, atol=1e-4)


def test_bad_imports_name_the_problem(tmp_path):
    folder = tmp_path / "hf"
    save_gpt2(folder, 1, 2, 32, 64)
    config = json.loads((folder / "config.json").read_text())

    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type is 'llama'; only 'gpt2'"):
        import_hf(folder, tmp_path / "m.onnx")
    (folder / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    with pytest.raises(ValueError, match=r"wrong shape \d+: transformer.h.0.attn.c_attn.bias \(96,\) "
                                         r"\(config needs \(192,\)\)"):
        import_hf(folder, tmp_path / "m.onnx")
    (folder / "config.json").write_text(json.dumps({**config, "n_layer": 2}))
    with pytest.raises(ValueError, match="missing 12: transformer.h.1.attn.c_attn.bias"):
        import_hf(folder, tmp_path / "m.onnx")
    (folder / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="unsupported GPT-2 options activation_function='relu'"):
        import_hf(folder, tmp_path / "m.onnx")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="no weights.*model.safetensors or pytorch_model.bin"):
        import_hf(folder, tmp_path / "m.onnx")
    with pytest.raises(ModelFileError, match="no such directory"):
        import_hf(tmp_path / "absent", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_unexpected_weights_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "hf"
    save_gpt2(folder, 1, 2, 32, 64)
    weights = load_file(str(folder / "model.safetensors"))
    weights["transformer.h.0.attn.q_norm.weight"] = torch.ones(32)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected 1: transformer.h.0.attn.q_norm.weight"):
        import_hf(folder, tmp_path / "m.onnx")


def test_cli_import_hf(tmp_path):
    folder = tmp_path / "hf"
    save_gpt2(folder, 1, 2, 32, 64, safetensors=False, tokenizer_json=False)
    out = tmp_path / "gpt2.onnx"
    result = subprocess.run(["aigc", "import-hf", str(folder), "--out", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert {p.key: p.value for p in onnx.load(out).metadata_props}["aigc.family"] == "gpt"
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    bad = subprocess.run(["aigc", "import-hf", str(folder), "--out", str(tmp_path / "b.onnx")], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.startswith("aigc: error: ") and "'bert'" in bad.stderr
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "b.onnx").exists()
