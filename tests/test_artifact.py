"""The loader rejects every kind of unusable model file with a message naming the file
and the problem."""

import json
import re
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx_models import (
    embedded_model,
    set_config,
    set_metadata,
    set_weight,
    weight,
    write_generator,
)

from aigc_engine import (
    AigcError,
    ImageGenerator,
    ModelFileError,
    TextGenerator,
    UnknownModelError,
)
from aigc_engine.artifacts.artifact import read_artifact


def test_a_good_file_loads(tmp_path):
    artifact = read_artifact(write_generator(tmp_path / "g.onnx"))
    assert artifact.family == "gan"
    assert artifact.config["latent_dim"] == 8
    assert artifact.provenance == {"dataset": "test"}


@pytest.mark.parametrize("content", [b"", b"hello, I am text\n", bytes(range(256)) * 4])
def test_not_onnx(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=r"bad\.onnx: not an ONNX model"):
        read_artifact(path)


@pytest.mark.parametrize("breakage, message", [
    ({"metadata": {"aigc.family": None}}, "no 'aigc.family' metadata"),
    ({"family": "diffusion"}, "unknown model family 'diffusion'"),
    ({"format_version": "3"}, r"format version 3, newer than this aigc-engine reads \(2\)"),
    ({"format_version": "one"}, "not an integer"),
    ({"format_version": None}, "no 'aigc.format_version'"),
    ({"metadata": {"aigc.config": "{latent: 8"}}, "'aigc.config' metadata is not valid JSON"),
    ({"metadata": {"aigc.config": None}}, "no 'aigc.config' metadata"),
    ({"config_overrides": {"latent_dim": 16}}, r"input 'z' has shape \['batch', 8\], but the config says latent_dim=16"),
    ({"config_overrides": {"height": 5}}, r"output 'images' has shape .* but the config says \(N, 1, 5, 6\)"),
    ({"config_overrides": {"channels": "one"}}, "needs a positive integer 'channels'"),
    ({"weight_rows": 9}, "weights do not fit the graph's shapes"),
])
def test_broken_metadata_or_weights(tmp_path, breakage, message):
    path = write_generator(tmp_path / "broken.onnx", **breakage)
    with pytest.raises(ModelFileError, match=message) as error:
        read_artifact(path)
    assert "broken.onnx" in str(error.value)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        read_artifact(tmp_path / "absent.onnx")
    with pytest.raises(UnknownModelError, match="unknown model 'digits-nope'"):
        ImageGenerator.load("digits-nope")


def test_classifier_is_not_an_image_generator(tmp_path):
    path = write_generator(tmp_path / "c.onnx", family="classifier")
    with pytest.raises(ModelFileError, match="is a 'classifier' model; expected one of: gan, dcgan, vae"):
        ImageGenerator.load(str(path))
    assert read_artifact(path).family == "classifier"


def save(model: onnx.ModelProto, path):
    onnx.save(model, str(path))
    return path


def rejected(path, message, load=read_artifact):
    with pytest.raises(ModelFileError, match=message) as error:
        load(path)
    assert str(path) in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("n_layer", [10**9, 1e9, 2**70, 5])
def test_config_sizes_are_bounded_before_anything_scales_with_them(tmp_path, n_layer):
    # 10**9 layers once built 4 × 10**9 input names before any check (OOM at 12-18 GB).
    path = save(set_config(embedded_model("pycode-gpt"), n_layer=n_layer), tmp_path / "huge.onnx")
    tracemalloc.start()
    try:
        rejected(path, "n_layer")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20  # the file's weights read one by one, nothing per claimed layer


@pytest.mark.parametrize("key, value, message", [
    ("n_embd", 10**9, r"'n_embd' \(at most 16777216\), got 1000000000"),
    ("vocab_size", 4097, r"transformer.wte.weight has shape \[4096, 256\], but the config says \[4097, 256\]"),
    ("n_positions", 512, r"transformer.wpe.weight has shape \[256, 256\], but the config says \[512, 256\]"),
    ("n_head", 4, r"axis 1 is 8, but the config says n_head = 4"),
    ("n_head", True, r"needs a positive integer 'n_head'.*got True"),
    ("eos_token_id", 4096, "eos_token_id 4096 is outside the vocabulary"),
])
def test_gpt_config_sizes_must_match_the_graph(tmp_path, key, value, message):
    rejected(save(set_config(embedded_model("pycode-gpt"), **{key: value}), tmp_path / "sizes.onnx"), message)


def test_metadata_json_that_python_cannot_hold(tmp_path):
    # Once a RecursionError and a ValueError that named neither the file nor the key.
    deep = '{"latent_dim": ' + "[" * 100_000 + "]" * 100_000 + "}"
    rejected(save(set_metadata(embedded_model("digits-gan"), aigc_config=deep), tmp_path / "deep.onnx"),
             "'aigc.config' metadata is nested too deeply")
    nested = 1
    for _ in range(40):  # parses, but deeper than any config: whatever prints it may recurse
        nested = [nested]
    rejected(save(set_metadata(embedded_model("digits-gan"), aigc_provenance=json.dumps({"a": nested})),
                  tmp_path / "nested.onnx"), "'aigc.provenance' metadata is nested too deeply")
    digits = '{"latent_dim": ' + "9" * 5000 + "}"
    rejected(save(set_metadata(embedded_model("digits-gan"), aigc_config=digits), tmp_path / "digits.onnx"),
             "'aigc.config' metadata is not valid JSON")
    wide = save(set_config(embedded_model("digits-gan"), latent_dim=int("9" * 4000)), tmp_path / "wide.onnx")
    assert len(rejected(wide, "needs a positive integer 'latent_dim'.*an integer of 4000 digits")) < 300


@pytest.mark.parametrize("value", ["abc", None, -1e-5, 0, 2.0, float("nan"), 10**400, [1e-5], False])
def test_layer_norm_epsilon_is_a_small_positive_number(tmp_path, value):
    model = embedded_model("pycode-gpt")
    config = json.loads(next(p.value for p in model.metadata_props if p.key == "aigc.config"))
    path = save(set_metadata(model, aigc_config=json.dumps({**config, "layer_norm_epsilon": value})),
                tmp_path / "eps.onnx")
    # "abc" used to reach the C++ decoder: "Unable to cast Python instance to C++ type '?'".
    rejected(path, r"'layer_norm_epsilon' in \(0, 1\]", lambda p: TextGenerator.load(str(p)))


def test_layer_norm_epsilon_must_be_the_graphs(tmp_path):
    path = save(set_config(embedded_model("pycode-gpt"), layer_norm_epsilon=1e-3), tmp_path / "eps.onnx")
    rejected(path, "has epsilon 1e-05, but the config says layer_norm_epsilon=0.001")


def _gpt(name):
    return f"transformer.h.1.{name}"


@pytest.mark.parametrize("edit, message", [
    (lambda m: set_weight(m, _gpt("attn.c_attn.weight"), np.zeros((256, 700), np.float32)),
     r"transformer.h.1.attn.c_attn.weight has shape \[256, 700\], but the config says \[256, 768\]"),
    (lambda m: set_weight(m, _gpt("mlp.c_proj.bias"), None), r"lack transformer.h.1.mlp.c_proj.bias"),
    (lambda m: set_weight(m, "transformer.ln_f.weight", None), r"lack transformer.ln_f.weight"),
    (lambda m: set_weight(m, _gpt("mlp.c_fc.weight"), weight(m, _gpt("mlp.c_fc.weight")).astype(np.float16)),
     r"transformer.h.1.mlp.c_fc.weight is float16, expected float32"),
    (lambda m: set_weight(m, _gpt("attn.c_proj.weight"), weight(m, _gpt("attn.c_proj.weight")).ravel()),
     r"transformer.h.1.attn.c_proj.weight has shape \[65536\], but the config says \[256, 256\]"),
    (lambda m: set_weight(m, _gpt("mlp.c_fc.weight"), weight(m, _gpt("mlp.c_fc.weight")).T.copy()),
     r"mlp.c_fc.weight has shape \[1024, 256\], but the config says \[256, 1024\]"),
    (lambda m: set_config(m, n_layer=2), r"input past.2.key, beyond the config's n_layer=2"),
])
def test_gpt_weights_must_match_the_config(tmp_path, edit, message):
    rejected(save(edit(embedded_model("pycode-gpt")), tmp_path / "weights.onnx"), message)


def test_no_gpt_layer_beyond_n_layer(tmp_path):
    # A 4-layer file whose graph was cut to 2 cache layers, its weights left: the native
    # backend would silently run 2 of the 4 layers.
    model = set_config(embedded_model("pycode-gpt"), n_layer=2)
    for name in ("past.2.key", "past.2.value", "past.3.key", "past.3.value"):
        model.graph.input.remove(next(i for i in model.graph.input if i.name == name))
    rejected(save(model, tmp_path / "cut.onnx"), r"weight transformer.h.2.ln_1.weight is for layer 2, but the config "
                                                 r"says n_layer=2")


@pytest.mark.parametrize("edit, message", [
    (lambda m: set_weight(m, "lstm.weight_hh_l1", np.zeros((1536, 256), np.float32)),
     r"lstm.weight_hh_l1 has shape \[1536, 256\], but the config says \[1536, 384\]"),
    (lambda m: set_weight(m, "head.weight", None), "lack head.weight"),
    (lambda m: set_config(m, hidden_size=256), (r"past.h has shape \[2, 'batch', 384\]: axis 2 is 384, but the "
                                                r"config says hidden_size = 256")),
    (lambda m: set_config(m, n_layer=1), r"axis 0 is 2, but the config says n_layer = 1"),
    (lambda m: set_config(m, n_embd=128), (r"embedding.weight has shape \[4096, 256\], but the config says "
                                           r"\[4096, 128\]")),
    (lambda m: set_weight(m, "embedding.weight", weight(m, "embedding.weight").astype(np.float64)),
     "embedding.weight is double, expected float32"),
])
def test_lstm_weights_must_match_the_config(tmp_path, edit, message):
    rejected(save(edit(embedded_model("pycode-lstm")), tmp_path / "lstm.onnx"), message)


@pytest.mark.parametrize("name, weight_name, bad", [
    ("pycode-gpt", "transformer.h.3.mlp.c_fc.weight", np.nan),
    ("pycode-gpt", "transformer.wte.weight", np.inf),
    ("pycode-lstm", "lstm.weight_ih_l0", -np.inf),
    ("digits-gan", None, np.nan),
])
def test_nan_and_inf_weights_are_refused_at_load(tmp_path, name, weight_name, bad):
    model = embedded_model(name)
    weight_name = weight_name or next(t.name for t in model.graph.initializer
                                      if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2)
    array = weight(model, weight_name)
    array.flat[array.size // 2] = bad
    path = save(set_weight(model, weight_name, array), tmp_path / "nan.onnx")
    rejected(path, f"weight {weight_name} has NaN or inf values .* at flat index {array.size // 2}")


def test_weight_data_must_fill_its_shape(tmp_path):
    model = embedded_model("pycode-gpt")
    tensor = next(t for t in model.graph.initializer if t.name == "transformer.wpe.weight")
    tensor.raw_data = tensor.raw_data[:1000]
    rejected(save(model, tmp_path / "short.onnx"), r"transformer.wpe.weight has shape \[256, 256\] \(65536 values\), "
                                                   r"but the file holds 250 float values")


def test_kv_cache_mb_beyond_memory_names_kv_cache_mb():
    # Used to print "unexpected MemoryError: std::bad_alloc".
    for kv_cache_mb in (1e9, 10**12):
        with pytest.raises(AigcError, match=r"kv_cache_mb=1e\+(09|12) \(the KV cache\) needs .* GiB of memory"):
            TextGenerator.load("pycode-gpt", kv_cache_mb=kv_cache_mb)
    with pytest.raises(AigcError, match="kv_cache_mb: expected a finite number > 0, got inf"):
        TextGenerator.load("pycode-gpt", kv_cache_mb=float("inf"))


def test_every_embedded_model_still_loads():
    from aigc_engine.artifacts import MODELS_DIR
    for path in sorted(MODELS_DIR.glob("*.onnx")):
        assert read_artifact(path).config is not None


def test_a_tokenizer_beyond_the_vocabulary_fails_only_the_prompts_that_use_it(tmp_path):
    """A tokenizer may know ids the model has no row for (here 5000 of 4096): the file loads,
    and only a prompt that uses such an id fails, by name; the call's other prompts run."""
    from aigc_engine import SamplingParams, TextGenerator

    model = embedded_model("pycode-gpt")
    tokenizer = json.loads(next(p.value for p in model.metadata_props if p.key == "aigc.tokenizer"))
    tokenizer["added_tokens"].append({"id": 5000, "content": "<|beyond|>", "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": False, "special": True})
    path = save(set_metadata(model, aigc_tokenizer=json.dumps(tokenizer)), tmp_path / "tok.onnx")
    for backend in ("native", "onnxruntime"):
        generator = TextGenerator.load(str(path), backend=backend)
        beyond, fine = generator.generate(["def <|beyond|>", "def"], SamplingParams(max_new_tokens=3, seed=0))
        assert re.fullmatch(r"prompt: token id (\d+) is outside the model's vocabulary of 4096 tokens", beyond.error)
        assert fine.error is None and len(fine.token_ids) == 3
