# A VAE's file holds its encoder beside its decoder: both paths match torch, the file is
# format version 2, the loader rejects a broken encoder path, and the runtime's held-out
# figures (reconstruction error, ELBO in bits per dimension) equal the training loss's own
# math done in torch on the same latents — which checks the tanh ↔ sigmoid derivation.
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import aigc_export  # noqa: E402
from aigc_engine import ImageGenerator  # noqa: E402
from aigc_engine.artifacts.artifact import read_artifact  # noqa: E402
from aigc_engine.errors import ModelFileError  # noqa: E402
from aigc_engine.images.reconstruction import heldout_reconstruction  # noqa: E402

TINY = {"latent_dim": 4, "enc_channels": [8, 16], "dec_channels": [16, 8]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = aigc_export.build_model("vae", TINY).eval()
    path = tmp_path_factory.mktemp("vae") / "tiny-vae.onnx"
    aigc_export.export_image_model(model.export_module, "vae", model.config, {"dataset": "test", "steps": 0}, path,
                                   encoder=model.export_encoder)
    return model, path


@pytest.fixture(scope="module")
def digits():
    _, heldout = aigc_export.split_heldout(aigc_export.load_images("mnist"))
    pixels = np.rint((heldout.images[::25] + 1) * 127.5).astype(np.uint8)  # (40, 1, 28, 28)
    return pixels.transpose(0, 2, 3, 1)


def test_the_file_holds_both_paths_and_they_match_torch(exported):
    model, path = exported
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["aigc.format_version"] == "2"
    assert meta["aigc.description"].startswith("Convolutional VAE (encoder and decoder), 4-d latent")
    assert [i.name for i in proto.graph.input] == ["z", "input_images"]
    assert [o.name for o in proto.graph.output] == ["images", "mean", "log_variance"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 4)).astype(np.float32)
    x = rng.uniform(-1, 1, (5, 1, 28, 28)).astype(np.float32)  # a batch size of its own
    images, mean, log_variance = session.run(None, {"z": z, "input_images": x})
    with torch.no_grad():
        want_mean, want_log_variance = model.encode(torch.from_numpy(x))
        want_images = model.decoder(torch.from_numpy(z))
    np.testing.assert_allclose(mean, want_mean.numpy(), atol=1e-4)
    np.testing.assert_allclose(log_variance, want_log_variance.numpy(), atol=1e-4)
    np.testing.assert_allclose(images, want_images.numpy(), atol=1e-4)


def test_only_a_vae_exports_an_encoder(exported, tmp_path):
    model, _ = exported
    with pytest.raises(ValueError, match="encoder: only a vae has one, got family 'gan'"):
        aigc_export.export_image_model(model.export_module, "gan", model.config, {}, tmp_path / "x.onnx",
                                       encoder=model.export_encoder)
    decoder_only = aigc_export.export_image_model(model.export_module, "vae", model.config, {}, tmp_path / "d.onnx")
    meta = {p.key: p.value for p in onnx.load(str(decoder_only)).metadata_props}
    assert meta["aigc.format_version"] == "1" and meta["aigc.description"].startswith("Convolutional VAE decoder")
    assert not ImageGenerator.load(str(decoder_only)).has_encoder


def _broken(path, tmp_path, change):
    proto = onnx.load(str(path))
    change(proto)
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    return tmp_path / "broken.onnx"


def _set_family(proto, family):
    next(p for p in proto.metadata_props if p.key == "aigc.family").value = family


def _drop_output(proto, name):
    proto.graph.output.remove(next(o for o in proto.graph.output if o.name == name))


@pytest.mark.parametrize("change, message", [
    (lambda p: p.graph.input[1].type.tensor_type.shape.dim[2].__setattr__("dim_value", 27),
     r"input 'input_images' has shape \['encoder_batch', 1, 27, 28\], but the config says \(N, 1, 28, 28\)"),
    (lambda p: _drop_output(p, "log_variance"), "needs outputs mean, log_variance; it lacks 'log_variance'"),
    (lambda p: _set_family(p, "gan"), "input 'input_images' \\(an encoder path\\) in a 'gan' model"),
])
def test_the_loader_rejects_a_broken_encoder_path(exported, tmp_path, change, message):
    with pytest.raises(ModelFileError, match=message):
        read_artifact(_broken(exported[1], tmp_path, change))


def test_heldout_figures_equal_the_training_loss_in_torch(exported, digits):
    model, path = exported
    generator = ImageGenerator.load(str(path))
    figures = heldout_reconstruction(generator, digits, seed=3)
    x = torch.from_numpy(digits.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
    target = (x + 1) / 2
    with torch.no_grad():
        mean, log_variance = model.encode(x)
        z = mean + torch.exp(0.5 * log_variance) * torch.from_numpy(generator.latents(len(x), seed=3))
        # the training loss's reconstruction term, on the logits 2a, and its KL term
        bce = F.binary_cross_entropy_with_logits(2 * model.decoder.logits(z), target, reduction="none")
        kl = -0.5 * (1 + log_variance - mean.square() - log_variance.exp()).sum(1)
        negative_elbo = bce.flatten(1).sum(1) + kl
        mse = ((model.decoder(mean) + 1) / 2 - target).square().mean()
    assert figures["heldout_digits"] == len(digits)
    assert figures["elbo_bits_per_dim"] == pytest.approx(float(negative_elbo.mean()) / (784 * math.log(2)), rel=1e-5)
    assert figures["reconstruction_mse"] == pytest.approx(float(mse), rel=1e-5)
    assert json.loads(json.dumps(figures)) == figures  # plain JSON values, for provenance
