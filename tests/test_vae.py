"""The shipped VAE's encoder: real digits encode and decode back far better than random latents
do; every input form a user has gives the same posterior; the encoder and decoder the runtime
cuts from the file agree with the whole graph run by stock onnxruntime; seeds make
reconstructions repeatable; other models and decoder-only files refuse with a clear error."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from aigc_engine import AigcError, ImageGenerator, ops
from aigc_engine.artifacts.registry import resolve
from aigc_engine.images.quality import REFERENCE_PATH
from onnx_models import write_generator


@pytest.fixture(scope="module")
def vae():
    return ImageGenerator.load("digits-vae", num_threads=1)


@pytest.fixture(scope="module")
def digits():
    """200 real held-out digits (never trained on), uint8 (200, 28, 28, 1), 20 of each class."""
    return np.load(REFERENCE_PATH)["heldout_images"][::5]


def _mse(images, targets):
    return float((((images.astype(np.float64) - targets) / 255.0) ** 2).mean())


def test_the_shipped_vae_has_its_encoder_in_a_version_2_file(vae):
    assert vae.has_encoder
    meta = {p.key: p.value for p in onnx.load(str(resolve("digits-vae")), load_external_data=False).metadata_props}
    assert meta["aigc.format_version"] == "2"


def test_round_trip_beats_random_latents_by_far(vae, digits):
    mean_reconstruction = _mse(vae.reconstruct(digits), digits)
    drawn_reconstruction = _mse(vae.reconstruct(digits, seed=1), digits)
    random_decodes = _mse(vae.decode(vae.latents(len(digits), seed=1)), digits)
    shuffled = _mse(vae.reconstruct(np.roll(digits, 1, axis=0)), digits)  # another digit's reconstruction
    assert mean_reconstruction < 0.4 * random_decodes
    assert mean_reconstruction < 0.4 * shuffled
    assert drawn_reconstruction < 0.5 * random_decodes


def test_every_input_form_gives_the_same_posterior(vae, digits):
    x = digits[:6]
    mean, log_variance = vae.encode(x)
    assert mean.shape == log_variance.shape == (6, vae.latent_dim)
    assert mean.dtype == log_variance.dtype == np.float32
    floats = x.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
    forms = {
        "float32 (n, C, H, W)": floats,
        "float64 (n, C, H, W)": floats.astype(np.float64),
        "uint8 (n, H, W)": x[..., 0],
        "int64 lists": x[..., 0].astype(np.int64).tolist(),
        "RGB (n, H, W, 3)": np.repeat(x, 3, axis=3),
        "RGBA, opaque": np.concatenate([np.repeat(x, 3, axis=3), np.full_like(x, 255)], axis=3),
        "grey + alpha, opaque": np.concatenate([x, np.full_like(x, 255)], axis=3),
    }
    for name, images in forms.items():
        got_mean, got_log_variance = vae.encode(images)
        np.testing.assert_allclose(got_mean, mean, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got_log_variance, log_variance, atol=1e-5, err_msg=name)
    for single in (x[2], x[2, :, :, 0]):  # one image, (H, W, 1) or (H, W)
        np.testing.assert_allclose(vae.encode(single)[0], mean[2:3], atol=1e-5)
    np.testing.assert_allclose(vae.encode(x, batch_size=4)[0], mean, atol=1e-6)


def test_transparent_pixels_are_composited_over_black(vae, digits):
    x = digits[:2]
    transparent = np.concatenate([np.full_like(x, 255), x], axis=3)  # white where opaque: the digit
    np.testing.assert_allclose(vae.encode(transparent)[0], vae.encode(x)[0], atol=1e-5)


def test_the_runtimes_two_paths_equal_the_whole_graph_in_stock_onnxruntime(vae, digits):
    session = ort.InferenceSession(str(resolve("digits-vae")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z", "input_images"]
    floats = digits[:5].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
    z = vae.latents(3, seed=4)
    images, mean, log_variance = session.run(["images", "mean", "log_variance"], {"z": z, "input_images": floats})
    got_mean, got_log_variance = vae.encode(floats)
    np.testing.assert_allclose(got_mean, mean, atol=1e-6)
    np.testing.assert_allclose(got_log_variance, log_variance, atol=1e-6)
    np.testing.assert_allclose(vae.decode_float(z), images, atol=1e-6)
    # The decoder alone, as stock onnxruntime runs it with an empty encoder batch.
    (alone,) = session.run(["images"], {"z": z, "input_images": np.zeros((0, 1, 28, 28), np.float32)})
    np.testing.assert_allclose(alone, images, atol=1e-6)


def test_seeded_reconstructions_repeat_and_depend_on_nothing_else(vae, digits):
    x = digits[:9]
    first = vae.reconstruct(x, seed=7)
    assert first.shape == (9, 28, 28, 1) and first.dtype == np.uint8
    np.testing.assert_array_equal(vae.reconstruct(x, seed=7), first)
    np.testing.assert_array_equal(vae.reconstruct(x[:4], seed=7, batch_size=3), first[:4])
    assert not np.array_equal(vae.reconstruct(x, seed=8), first)
    mean, log_variance = vae.encode(x)
    np.testing.assert_array_equal(vae.reconstruct(x), vae.decode(mean))
    # the posterior's noise is standard normal, not a draw from the VAE's mixture prior
    expected_z = mean + np.exp(0.5 * log_variance) * ops.sample_latent(9, vae.latent_dim, 7)
    np.testing.assert_allclose(vae.posterior_latents(x, seed=7), expected_z, atol=1e-6)


def test_interpolation_between_real_images_ends_on_their_reconstructions(vae, digits):
    a, b = digits[0], digits[150]
    path = vae.interpolate_images(a, b, steps=6)
    assert path.shape == (6, 28, 28, 1) and path.dtype == np.uint8
    np.testing.assert_array_equal(path[0], vae.reconstruct(a)[0])
    np.testing.assert_array_equal(path[-1], vae.reconstruct(b)[0])
    mean_a, mean_b = vae.encode(a)[0][0], vae.encode(b)[0][0]
    np.testing.assert_array_equal(path[2], vae.decode((mean_a + 0.4 * (mean_b - mean_a))[None].astype(np.float32))[0])
    np.testing.assert_array_equal(vae.interpolate_images(a, b, steps=1), path[:1])


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 28, 28), bool), r"expected float \(n, 1, 28, 28\) in \[-1, 1\], or 8-bit pixels.*got bool"),
    (np.zeros((3, 27, 28), np.uint8), r"got uint8 \(3, 27, 28\)"),
    (np.zeros((0, 28, 28), np.uint8), r"got uint8 \(0, 28, 28\)"),
    (np.zeros((2, 28, 28, 5), np.uint8), r"got uint8 \(2, 28, 28, 5\)"),
    (np.zeros((2, 28, 28, 1), np.float32), r"got float32 \(2, 28, 28, 1\)"),
    (np.full((1, 1, 28, 28), 2.0, np.float32), r"in \[-1, 1\] \(pixel / 127.5 − 1\), got values in \[2, 2\]"),
    (np.full((1, 1, 28, 28), np.nan, np.float32), "must be finite and in \\[-1, 1\\], got NaN or infinity"),
    (np.full((1, 28, 28), 256), r"must lie in 0..255, got values in \[256, 256\]"),
    (np.full((1, 28, 28), -1), r"must lie in 0..255"),
    ([np.zeros((28, 28)), np.zeros((5, 5))], "expected float"),
    ("digit.png", "got <U9"),
])
def test_bad_images_get_a_clear_error(vae, images, message):
    with pytest.raises(AigcError, match=message):
        vae.encode(images)


def test_bad_interpolation_ends(vae, digits):
    with pytest.raises(AigcError, match="image_a: expected one image, got 2"):
        vae.interpolate_images(digits[:2], digits[3])
    with pytest.raises(AigcError, match="steps: expected an integer >= 1, got 0"):
        vae.interpolate_images(digits[0], digits[1], steps=0)


def test_models_without_an_encoder_refuse(tmp_path, digits):
    gan = ImageGenerator.load("digits-gan")
    assert not gan.has_encoder
    for call in (lambda: gan.encode(digits), lambda: gan.reconstruct(digits, seed=1),
                 lambda: gan.interpolate_images(digits[0], digits[1])):
        with pytest.raises(AigcError, match="digits-gan.onnx is a 'gan' model, which has no encoder"):
            call()
    write_generator(tmp_path / "old-vae.onnx", family="vae", shape=(1, 28, 28))
    decoder_only = ImageGenerator.load(str(tmp_path / "old-vae.onnx"))
    with pytest.raises(AigcError, match="old-vae.onnx holds the VAE's decoder only.*aigc export"):
        decoder_only.reconstruct(digits)
    assert decoder_only.sample(2, seed=0).shape == (2, 28, 28, 1)  # sampling works as before


def test_the_stamped_heldout_figures_are_what_the_runtime_measures(vae):
    # Export stamped them with the same seed (0) on the same 1,000 held-out digits: no sampling error.
    from aigc_engine.images.reconstruction import heldout_reconstruction

    stamped = vae.artifact.provenance["quality"]
    measured = heldout_reconstruction(vae, np.load(REFERENCE_PATH)["heldout_images"], seed=0)
    assert measured["heldout_digits"] == stamped["heldout_digits"] == 1000
    for key in ("reconstruction_mse", "elbo_bits_per_dim"):
        assert measured[key] == pytest.approx(stamped[key], rel=1e-6)


def test_a_reference_file_without_heldout_pixels_is_named(vae, tmp_path, monkeypatch):
    from aigc_engine.images import quality

    reference = dict(np.load(REFERENCE_PATH))
    del reference["heldout_images"]
    np.savez(tmp_path / "old-reference.npz", **reference)
    monkeypatch.setattr(quality, "REFERENCE_PATH", tmp_path / "old-reference.npz")
    classifier = quality.DigitClassifier()
    assert "frechet_distance" in quality.evaluate_model("digits-gan", 129, classifier=classifier)
    with pytest.raises(AigcError, match="old-reference.npz holds no held-out digit pixels.*aigc train classifier"):
        quality.evaluate_model(vae, 129, classifier=classifier)


def test_its_mixture_prior_beats_standard_normal_latents_by_far(vae):
    from aigc_engine.images.quality import DigitClassifier

    assert vae.prior is not None and len(vae.prior.weights) == 20  # aigc train vae's default
    classifier = DigitClassifier(num_threads=1)
    mixture = classifier.report(vae.sample(1000, seed=0)).frechet_distance
    standard = classifier.report(vae.decode(ops.sample_latent(1000, vae.latent_dim, 0))).frechet_distance
    assert mixture < 0.5 * standard  # measured: 83 against 286
