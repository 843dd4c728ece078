# The ONNX contract of aigc_export: tiny untrained models of each family are exported
# and checked against the file format the runtime loads (input z (N, latent) → images
# (N, C, H, W) in [-1, 1], classifier images → logits + features, aigc.* metadata,
# one self-contained file) and against torch itself, at several batch sizes.
import json
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import aigc_export  # noqa: E402
from aigc_export.common import onnx_export  # noqa: E402
from aigc_export.images import export as image_export  # noqa: E402

TINY = {
    "gan": {"latent_dim": 8, "g_hidden": [32, 64], "d_hidden": [32]},
    "dcgan": {"latent_dim": 8, "g_channels": [16, 8], "d_channels": [8, 16]},
    "vae": {"latent_dim": 4, "enc_channels": [8, 16], "dec_channels": [16, 8]},
}
PROVENANCE = {"dataset": "mnist", "steps": 0, "seed": 0, "batch_size": 64, "final_losses": {}}


def _export(family, tmp_path, **config):
    torch.manual_seed(0)
    model = aigc_export.build_model(family, {**TINY[family], **config})
    module = model.export_module.eval()
    path = aigc_export.export_image_model(module, family, model.config, PROVENANCE, tmp_path / f"{family}.onnx")
    return module, model.config, path


@pytest.mark.parametrize("family", ["gan", "dcgan", "vae"])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 16)])
def test_image_export_matches_torch(family, channels, size, tmp_path):
    module, config, path = _export(family, tmp_path, channels=channels, height=size, width=size)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # one file, no external data

    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == ["z"]
    assert [o.name for o in proto.graph.output] == ["images"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["aigc.family"] == family
    assert meta["aigc.format_version"] == "1"
    cfg = json.loads(meta["aigc.config"])
    assert (cfg["latent_dim"], cfg["channels"], cfg["height"], cfg["width"]) == (
        config["latent_dim"], channels, size, size)
    provenance = json.loads(meta["aigc.provenance"])
    assert {"dataset", "steps", "seed", "batch_size", "final_losses", "torch_version", "exported_at",
            "quality"} <= set(provenance)
    assert provenance["quality"] is None
    assert meta["aigc.description"]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 33):
        z = rng.standard_normal((n, config["latent_dim"])).astype(np.float32)
        (images,) = session.run(None, {"z": z})
        assert images.shape == (n, channels, size, size) and images.dtype == np.float32
        assert images.min() >= -1.0 and images.max() <= 1.0
        with torch.no_grad():
            expected = module(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(images, expected, rtol=0, atol=1e-4)


def test_classifier_export_gives_logits_and_features(tmp_path):
    torch.manual_seed(0)
    model = aigc_export.build_model("classifier").eval()
    config = {**model.config, "heldout_accuracy": 0.5}
    path = aigc_export.export_classifier(model, config, {"dataset": "mnist"}, tmp_path / "c.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["aigc.family"] == "classifier" and meta["aigc.format_version"] == "1"
    assert json.loads(meta["aigc.config"])["feature_dim"] == model.config["feature_dim"]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "features"]
    images = np.random.default_rng(2).uniform(-1, 1, (6, 1, 28, 28)).astype(np.float32)
    logits, features = session.run(None, {"images": images})
    with torch.no_grad():
        want_logits, want_features = model(torch.from_numpy(images))
    assert logits.shape == (6, 10) and features.shape == (6, model.config["feature_dim"])
    np.testing.assert_allclose(logits, want_logits.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(features, want_features.numpy(), rtol=0, atol=1e-4)


def test_disagreeing_runtime_raises_and_writes_nothing(tmp_path, monkeypatch):
    real_run = image_export.run_onnx
    monkeypatch.setattr(image_export, "run_onnx", lambda blob, feeds: [o + 1e-3 for o in real_run(blob, feeds)])
    with pytest.raises(aigc_export.ExportVerificationError, match=r"differs from torch by 0\.001"):
        _export("gan", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_the_previous_file(tmp_path, monkeypatch):
    _, _, path = _export("vae", tmp_path)
    before = path.read_bytes()
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)
    with pytest.raises(aigc_export.ExportVerificationError):
        _export("vae", tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("family, size", [("dcgan", 30), ("vae", 26)])
def test_image_size_must_divide_by_four(family, size):
    with pytest.raises(ValueError, match="multiple of 4"):
        aigc_export.build_model(family, {"height": size, "width": size})


def test_unknown_family_and_config_keys():
    with pytest.raises(ValueError, match="unknown model family 'diffusion'"):
        aigc_export.build_model("diffusion")
    with pytest.raises(ValueError, match="unknown keys"):
        aigc_export.build_model("gan", {"hiden": [8]})


def test_measure_quality_without_runtime_module(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "aigc_engine.images.quality", None)  # import → ImportError
    assert aigc_export.measure_quality(tmp_path / "m.onnx") is None


def test_measure_quality_wraps_evaluate_model(monkeypatch, tmp_path):
    def evaluate_model(path, n, seed):
        if n == 0:
            raise FileNotFoundError("no shipped classifier")
        return {"fid": np.float32(12.5), "n": n, "coverage": np.array([0.1, 0.9])}

    quality = types.SimpleNamespace(DIGIT_SHAPE=(1, 28, 28), evaluate_model=evaluate_model)
    monkeypatch.setitem(sys.modules, "aigc_engine.images.quality", quality)
    _, _, digits = _export("gan", tmp_path)
    assert aigc_export.measure_quality(digits, n=10) == {"fid": 12.5, "n": 10, "coverage": [0.1, 0.9]}
    assert aigc_export.measure_quality(digits, n=0) is None
    _, _, colour = _export("dcgan", tmp_path, channels=3, height=16, width=16)
    assert aigc_export.measure_quality(colour, n=10) is None
