"""The loader rejects every kind of unusable model file with a message naming the file
and the problem."""

import numpy as np
import pytest

from aigc_engine import ImageGenerator, ModelFileError, UnknownModelError
from aigc_engine.artifacts.artifact import read_artifact
from onnx_models import write_generator


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
    ({"format_version": "2"}, "format version 2, newer than this aigc-engine reads"),
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
