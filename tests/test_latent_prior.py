"""A VAE's mixture prior (aigc_engine/images/latent_prior.py): draws follow the mixture the
file carries (component shares and moments against the mixture's own, components told apart
by their nearest mean, not by the code's choice), sample i depends on its seed and index
only, truncation shrinks draws toward their component's mean without changing the shares,
ImageGenerator samples from it while the posterior's noise stays standard normal, and a bad
mixture in a file gets a ModelFileError naming what is wrong."""

import numpy as np
import pytest

from aigc_engine import ImageGenerator, ops
from aigc_engine.errors import ModelFileError
from aigc_engine.images.latent_prior import latent_prior
from onnx_models import generator_model, reference_images, write_generator

WEIGHTS = [0.2, 0.5, 0.3]
MEANS = [[-8.0, 0.0], [8.0, 0.0], [0.0, 9.0]]
SCALE_TRIL = [[[1.0, 0.0], [0.0, 0.5]], [[0.7, 0.0], [0.4, 0.6]], [[1.2, 0.0], [-0.3, 0.8]]]


def _spec(**changes):
    return {"kind": "gaussian_mixture", "weights": WEIGHTS, "means": MEANS, "scale_tril": SCALE_TRIL, **changes}


def _prior(**changes):
    return latent_prior({"latent_dim": 2, "latent_prior": _spec(**changes)}, "test.onnx")


def _nearest(z):
    return np.linalg.norm(z[:, None, :] - np.array(MEANS)[None], axis=2).argmin(1)


def test_draws_follow_the_mixture():
    n = 40_000
    z = _prior().draw(n, seed=3).astype(np.float64)
    k = _nearest(z)  # the means are ≥ 9 standard deviations apart: no draw lands nearer another's
    for component, weight in enumerate(WEIGHTS):
        share = (k == component).mean()
        assert abs(share - weight) < 5 * np.sqrt(weight * (1 - weight) / n)
        members = z[k == component]
        scale = np.array(SCALE_TRIL[component])
        covariance = scale @ scale.T
        standard_error = np.sqrt(np.diag(covariance) / len(members))
        assert np.all(np.abs(members.mean(0) - MEANS[component]) < 5 * standard_error)
        np.testing.assert_allclose(np.cov(members, rowvar=False), covariance, atol=0.05)


def test_sample_i_depends_on_seed_and_index_only():
    prior = _prior()
    full = prior.draw(60, seed=5)
    np.testing.assert_array_equal(prior.draw(7, seed=5), full[:7])
    np.testing.assert_array_equal(prior.draw(10, seed=5, first_index=50), full[50:])
    assert not np.array_equal(prior.draw(60, seed=6), full)
    assert full.dtype == np.float32 and full.shape == (60, 2)


def test_truncation_shrinks_each_draw_toward_its_mean_and_keeps_the_shares():
    n, truncation = 20_000, 0.5
    z = _prior().draw(n, seed=1, truncation=truncation).astype(np.float64)
    k = _nearest(z)
    for component, weight in enumerate(WEIGHTS):
        members = z[k == component] - MEANS[component]
        noise = np.linalg.solve(np.array(SCALE_TRIL[component]), members.T).T  # back to ε
        assert np.abs(noise).max() <= truncation + 1e-5
        assert abs((k == component).mean() - weight) < 5 * np.sqrt(weight * (1 - weight) / n)


def test_the_generator_samples_from_the_files_mixture(tmp_path):
    spec = {"kind": "gaussian_mixture", "weights": [0.25, 0.75], "means": [[3.0] * 8, [-3.0] * 8],
            "scale_tril": [np.diag(np.full(8, 0.5)).tolist(), np.eye(8).tolist()]}
    model = generator_model(family="vae", config_overrides={"latent_prior": spec})
    path = write_generator(tmp_path / "vae.onnx", family="vae", config_overrides={"latent_prior": spec})
    generator = ImageGenerator.load(str(path))
    z = generator.latents(500, seed=4)
    assert np.all(np.abs(np.abs(z.mean(1)) - 3.0) < 2.0)  # every draw sits by one of the two means
    share_near_minus_three = (z.mean(1) < 0).mean()
    assert abs(share_near_minus_three - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 500)
    expected = np.rint((reference_images(model, z) + 1) * 127.5).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(generator.sample(500, seed=4).astype(int), expected.astype(int), atol=1)
    ends = generator.interpolation_latents(1, 2, 5)  # the straight line between two prior draws
    np.testing.assert_allclose(ends[[0, -1]], np.stack([generator.latents(1, 1)[0], generator.latents(1, 2)[0]]))
    np.testing.assert_allclose(ends[2], (ends[0] + ends[-1]) / 2, atol=1e-6)

    plain = ImageGenerator.load(str(write_generator(tmp_path / "plain.onnx", family="vae")))
    np.testing.assert_array_equal(plain.latents(5, seed=4), ops.sample_latent(5, 8, 4))


@pytest.mark.parametrize("changes, message", [
    ({"kind": "student_t"}, "kind 'gaussian_mixture'"),
    ({"weights": [0.2, 0.5, 0.4]}, "positive and sum to 1"),
    ({"weights": [-0.2, 0.9, 0.3]}, "positive and sum to 1"),
    ({"weights": []}, "'weights' must be a non-empty list"),
    ({"weights": [0.2, "x", 0.3]}, "'weights' is not an array of numbers"),
    ({"means": [[0.0, 1.0]] * 2}, r"need 'means' \(3, 2\) and 'scale_tril' \(3, 2, 2\)"),
    ({"means": [[0.0, float("nan")]] * 3}, "'means' holds values that are not finite"),
    ({"scale_tril": [[[1.0, 0.3], [0.0, 1.0]]] * 3}, "lower triangular with a positive diagonal"),
    ({"scale_tril": [[[1.0, 0.0], [0.0, -1.0]]] * 3}, "lower triangular with a positive diagonal"),
    ({"scale_tril": [[1.0, 0.0], [0.0, 1.0]]}, "'scale_tril' \\(3, 2, 2\\)"),
])
def test_a_bad_mixture_is_named(changes, message):
    with pytest.raises(ModelFileError, match=f"test.onnx: config 'latent_prior'.*{message}"):
        _prior(**changes)


def test_a_file_with_a_bad_mixture_refuses_to_load(tmp_path):
    spec = _spec(weights=[1.0], means=[[0.0] * 3], scale_tril=[np.eye(3).tolist()])
    path = write_generator(tmp_path / "bad.onnx", family="vae", config_overrides={"latent_prior": spec})
    with pytest.raises(ModelFileError, match=r"bad.onnx: config 'latent_prior'.*latent_dim 8 need 'means' \(1, 8\)"):
        ImageGenerator.load(str(path))
