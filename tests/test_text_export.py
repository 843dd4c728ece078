# The text ONNX contract of aigc_export: tiny untrained GPT and LSTM models exported with
# a tokenizer and checked against the file the runtime loads — input/output names and
# dynamic axes, aigc.* metadata, GPT-2 initializer names and layouts — and against torch:
# prefill + 20 cached steps on a left-padded batch, and greedy decoding token for token.
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import aigc_export  # noqa: E402
from aigc_export.text import export as text_export  # noqa: E402

torch.set_num_threads(1)
TINY = {
    "gpt": {"vocab_size": 300, "n_positions": 48, "n_embd": 24, "n_layer": 2, "n_head": 3},
    "lstm": {"vocab_size": 300, "n_embd": 16, "hidden_size": 24, "n_layer": 2},
}
TEXTS = ["def add(a, b):\n    return a + b\n", "héllo wörld — naïve café 😀 🐍 中文 テキスト\n",
         "class Point:\n    x: int = 0\n    y: int = 0\n"] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return aigc_export.train_tokenizer(TEXTS, 300)


def _model(family, seed=0, **config):
    torch.manual_seed(seed)
    model = aigc_export.build_model(family, {**TINY[family], **config}).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm parameters, as after training
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("text")
    models = {f: _model(f) for f in TINY}
    paths = {f: aigc_export.export_text_model(m, f, tokenizer.to_str(), {"dataset": "tiny", "steps": 0},
                                              folder / f"{f}.onnx") for f, m in models.items()}
    return models, paths


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("text", ["plain ASCII: x = [i ** 2 for i in range(10)]\n",
                                  "multi-byte UTF-8: naïve façade, Ελληνικά, русский, 日本語",
                                  "emoji 😀🐍👩‍👩‍👧 and a lone \x00 control and\ttabs\r\n", ""])
def test_tokenizer_round_trips_any_utf8(tokenizer, text):
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text
    again = aigc_export.tokenizer_from_json(tokenizer.to_str())
    assert again.encode(text).ids == ids


def test_tokenizer_sizes_and_special_token(tokenizer):
    assert tokenizer.get_vocab_size() == 300
    assert tokenizer.token_to_id("<|endoftext|>") == 0
    assert len(tokenizer.encode("    return a + b").ids) < len("    return a + b")  # merges learnt
    with pytest.raises(ValueError, match="vocab_size 100 is too small.*257"):
        aigc_export.train_tokenizer(TEXTS, 100)


def test_gpt_graph_contract(exported, tokenizer):
    models, paths = exported
    proto = onnx.load(paths["gpt"])
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    inputs, outputs = text_export.gpt_io_names(2)
    assert [i.name for i in proto.graph.input] == inputs
    assert inputs[3:] == ["past.0.key", "past.0.value", "past.1.key", "past.1.value"]
    assert [o.name for o in proto.graph.output] == outputs
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(proto.graph.input) + list(proto.graph.output)}
    assert dims["attention_mask"] == ["batch", "total_sequence"]
    assert dims["past.1.value"] == ["batch", 3, "past_sequence", 8]
    assert dims["present.0.key"] == ["batch", 3, "total_sequence", 8]
    assert dims["logits"] == ["batch", "sequence", 300]
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.input}
    assert types["input_ids"] == types["attention_mask"] == onnx.TensorProto.INT64
    assert types["past.0.key"] == onnx.TensorProto.FLOAT

    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["aigc.family"] == "gpt" and meta["aigc.format_version"] == "1"
    config = json.loads(meta["aigc.config"])
    assert config == {**TINY["gpt"], "layer_norm_epsilon": 1e-5, "eos_token_id": 0}
    assert meta["aigc.tokenizer"] == tokenizer.to_str()
    provenance = json.loads(meta["aigc.provenance"])
    assert {"dataset", "steps", "quality", "torch_version", "exported_at"} <= set(provenance)


def test_gpt_initializers_keep_gpt2_names_and_layout(exported):
    models, paths = exported
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(paths["gpt"]).graph.initializer}
    state = models["gpt"].state_dict()
    assert "transformer.h.1.attn.c_attn.weight" in state and "lm_head.weight" not in state
    for name, tensor in state.items():  # every parameter, by its torch name, unchanged
        assert name in weights, name
        np.testing.assert_array_equal(weights[name], tensor.numpy())
    assert weights["transformer.h.0.attn.c_attn.weight"].shape == (24, 72)  # Conv1D: (in, out)
    assert weights["transformer.h.0.mlp.c_proj.weight"].shape == (96, 24)
    big = [n for n, w in weights.items() if w.size >= 300 * 24]
    assert big == ["transformer.wte.weight"]  # tied: one copy serves the gather and the head


def test_parameter_names_survive_equal_small_tensors(tmp_path, tokenizer):
    # Freshly built: all biases 0 and LayerNorm scales 1, which the exporter's own optimizer
    # would merge into one initializer each.
    torch.manual_seed(0)
    model = aigc_export.build_model("gpt", TINY["gpt"])
    path = aigc_export.export_text_model(model, "gpt", tokenizer.to_str(), {}, tmp_path / "g.onnx")
    names = {t.name for t in onnx.load(path).graph.initializer}
    assert set(model.state_dict()) <= names


def _gpt_feeds(inputs, ids, positions, mask, past):
    return dict(zip(inputs, [ids, positions, mask, *past]))


def test_gpt_left_padded_batch_matches_torch_for_prefill_and_20_steps(exported):
    models, paths = exported
    model, session = models["gpt"], _session(paths["gpt"])
    inputs, _ = text_export.gpt_io_names(2)
    rng = np.random.default_rng(5)
    lengths = (9, 3)
    ids = np.zeros((2, 9), np.int64)
    mask = np.zeros((2, 9), np.int64)
    for row, n in enumerate(lengths):
        ids[row, 9 - n:] = rng.integers(1, 300, n)
        mask[row, 9 - n:] = 1
    positions = np.maximum(mask.cumsum(1) - 1, 0)
    past = [np.zeros((2, 3, 0, 8), np.float32)] * 4
    for step in range(21):
        got = session.run(None, _gpt_feeds(inputs, ids, positions, mask, past))
        with torch.no_grad():
            logits, presents = model(*map(torch.from_numpy, (ids, positions, mask)), [torch.from_numpy(p) for p in past])
        real = mask[:, -ids.shape[1]:].astype(bool)
        np.testing.assert_allclose(got[0][real], logits.numpy()[real], rtol=0, atol=1e-4)
        for have, want in zip(got[1:], presents):
            assert have.shape == (2, 3, mask.shape[1], 8)
            np.testing.assert_allclose(have, want.numpy(), rtol=0, atol=1e-4)
        # the padded row equals the same prompt run alone, without padding
        if step == 0:
            alone = session.run(None, _gpt_feeds(inputs, ids[1:, 6:], positions[1:, 6:], mask[1:, 6:],
                                                 [p[1:] for p in past]))
            np.testing.assert_allclose(alone[0][0], got[0][1, 6:], rtol=0, atol=1e-5)
        past = got[1:]
        ids = got[0][:, -1].argmax(-1)[:, None]
        positions = positions[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], 1)


def test_lstm_graph_matches_torch_for_prefill_and_20_steps(exported):
    models, paths = exported
    model, session = models["lstm"], _session(paths["lstm"])
    proto = onnx.load(paths["lstm"])
    assert [i.name for i in proto.graph.input] == ["input_ids", "past.h", "past.c"]
    assert [o.name for o in proto.graph.output] == ["logits", "present.h", "present.c"]
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, tensor in model.state_dict().items():  # lstm.weight_ih_l0, …: stable names, torch layout
        np.testing.assert_array_equal(weights[name], tensor.numpy())
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["aigc.family"] == "lstm"
    assert json.loads(meta["aigc.config"]) == {**TINY["lstm"], "eos_token_id": 0}
    ids = np.random.default_rng(1).integers(0, 300, (3, 6))
    h = c = np.zeros((2, 3, 24), np.float32)
    th, tc = model.zero_state(3)
    for _ in range(21):
        logits, h, c = session.run(None, {"input_ids": ids, "past.h": h, "past.c": c})
        with torch.no_grad():
            want, th, tc = model(torch.from_numpy(ids), th, tc)
        assert logits.shape == (3, ids.shape[1], 300)
        np.testing.assert_allclose(logits, want.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(h, th.numpy(), rtol=0, atol=1e-4)
        ids = logits[:, -1].argmax(-1)[:, None]


def _ort_greedy(family, session, prompt, n):
    tokens = list(prompt)
    if family == "lstm":
        h = c = np.zeros(tuple(d if isinstance(d, int) else 1 for d in session.get_inputs()[1].shape), np.float32)
        feed = np.array([tokens], np.int64)
        for _ in range(n):
            logits, h, c = session.run(None, {"input_ids": feed, "past.h": h, "past.c": c})
            tokens.append(int(logits[0, -1].argmax()))
            feed = np.array([[tokens[-1]]], np.int64)
        return tokens
    inputs, _ = text_export.gpt_io_names(2)
    past = [np.zeros((1, 3, 0, 8), np.float32)] * 4
    feed = np.array([tokens], np.int64)
    for _ in range(n):
        start = len(tokens) - feed.shape[1]
        positions = np.arange(start, len(tokens))[None]
        out = session.run(None, _gpt_feeds(inputs, feed, positions, np.ones((1, len(tokens)), np.int64), past))
        past = out[1:]
        tokens.append(int(out[0][0, -1].argmax()))
        feed = np.array([[tokens[-1]]], np.int64)
    return tokens


@torch.no_grad()
def _torch_greedy(model, prompt, n):
    tokens = list(prompt)
    for _ in range(n):  # no cache: the whole sequence every step
        tokens.append(int(model.loss_logits(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_greedy_onnx_equals_greedy_torch(exported, tokenizer, family):
    models, paths = exported
    prompt = tokenizer.encode("def add(a, b):").ids
    n = 48 - len(prompt)
    got = _ort_greedy(family, _session(paths[family]), prompt, n)
    assert got == _torch_greedy(models[family], prompt, n)
    if family == "gpt":  # (a random LSTM soon settles on one token; the GPT does not)
        assert len(set(got[len(prompt):])) > 1


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match="n_embd 30 is not divisible by n_head 4"):
        aigc_export.build_model("gpt", {**TINY["gpt"], "n_embd": 30, "n_head": 4})
    with pytest.raises(ValueError, match="vocab_size 200 is too small"):
        aigc_export.build_model("lstm", {**TINY["lstm"], "vocab_size": 200})
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        aigc_export.build_model("gpt", {**TINY["gpt"], "n_layer": 0})
    with pytest.raises(ValueError, match="unknown keys.*hidden"):
        aigc_export.build_model("gpt", {"hidden": 3})


def test_failed_text_verification_writes_nothing(tmp_path, tokenizer, monkeypatch):
    real_session = text_export.session

    class Drifting:  # onnxruntime, but the logits drift by 1e-3 from the first decode step on
        def __init__(self, blob):
            self.session, self.calls = real_session(blob), 0

        def run(self, names, feeds):
            outputs = self.session.run(names, feeds)
            self.calls += 1
            return [outputs[0] + 1e-3 * (self.calls > 1), *outputs[1:]]

    monkeypatch.setattr(text_export, "session", Drifting)
    for family in ("gpt", "lstm"):
        with pytest.raises(aigc_export.ExportVerificationError, match="'logits' at decode step 1.*by 0.001"):
            aigc_export.export_text_model(_model(family), family, tokenizer.to_str(), {}, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
