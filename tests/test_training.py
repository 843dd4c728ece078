# Training with aigc_export: a few steps of each family on each kind of data source
# (MNIST 5k, sklearn digits, a folder of PNGs the test writes), then the exported file
# runs in onnxruntime; seeding makes runs repeatable; checkpoints resume exactly; bad
# sources fail with a clear error. Step counts are tiny: these test plumbing, not quality.
import json
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from PIL import Image  # noqa: E402

import aigc_export  # noqa: E402
from aigc_export.images import export as image_export  # noqa: E402
from aigc_export.images import quality_probe as image_quality_probe  # noqa: E402


@pytest.fixture
def image_folder(tmp_path):
    """Seven small images of mixed size, mode and format, some in a subfolder."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "pics"
    (folder / "more").mkdir(parents=True)
    for i in range(7):
        size = (20 + i, 24)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L" if i % 2 else "RGB")
        image.save(folder / ("more" if i > 3 else "") / f"img{i}.{'png' if i % 3 else 'bmp'}")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _weights(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def _train(family, tmp_path, data="mnist", steps=4, **kwargs):
    kwargs = {"batch_size": 16, "progress": False, "quality_n": 0, **kwargs}
    return aigc_export.train_image_model(family, data, steps, tmp_path / f"{family}.onnx", **kwargs)


@pytest.mark.parametrize("family", ["gan", "dcgan", "vae"])
@pytest.mark.parametrize("source", ["mnist", "digits", "folder"])
def test_few_steps_train_and_export(family, source, tmp_path, image_folder):
    options = {"image_size": 16, "channels": 3} if source == "folder" else {}
    data = str(image_folder) if source == "folder" else source
    summary = _train(family, tmp_path, data, **options)
    assert summary["steps"] == 4 and summary["resumed_from"] is None
    assert summary["final_losses"] and all(np.isfinite(v) for v in summary["final_losses"].values())

    session = ort.InferenceSession(summary["out"], providers=["CPUExecutionProvider"])
    latent = session.get_inputs()[0].shape[1]
    size, channels = options.get("image_size", 28), options.get("channels", 1)
    feeds = {"z": np.zeros((3, latent), np.float32)}
    if family == "vae":  # the encoder ships in the same graph: its input wants a feed too (any batch)
        feeds["input_images"] = np.zeros((2, channels, size, size), np.float32)
    images = session.run(["images"], feeds)[0]
    assert images.shape == (3, channels, size, size) and np.isfinite(images).all()
    meta = {p.key: p.value for p in onnx.load(summary["out"]).metadata_props}
    provenance = json.loads(meta["aigc.provenance"])
    assert provenance["steps"] == 4 and provenance["final_losses"] == summary["final_losses"]
    assert provenance["dataset"] == (str(image_folder.resolve()) if source == "folder" else source)


def test_same_seed_same_weights(tmp_path):
    first = _train("dcgan", tmp_path / "a", steps=3)
    second = _train("dcgan", tmp_path / "b", steps=3)
    other = _train("dcgan", tmp_path / "c", steps=3, seed=1)
    a, b, c = _weights(first["out"]), _weights(second["out"]), _weights(other["out"])
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("family, options", [
    ("vae", {}),
    ("dcgan", {"augment": True, "average_generator": 0.9}),  # the average is in the checkpoint too
])
def test_resume_continues_exactly(tmp_path, family, options):
    straight = _train(family, tmp_path / "straight", steps=6, **options)
    first = _train(family, tmp_path / "resumed", steps=4, checkpoint_every=2, **options)
    assert first["checkpoint"].endswith(f"{family}.ckpt/checkpoint.pt")
    resumed = _train(family, tmp_path / "resumed", steps=6, resume=True, **options)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    a, b = _weights(straight["out"]), _weights(resumed["out"])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert resumed["final_losses"] == straight["final_losses"]

    checkpoint = tmp_path / "resumed" / f"{family}.ckpt"
    again = aigc_export.export_checkpoint(checkpoint, tmp_path / "again.onnx", quality_n=0)
    assert again["steps"] == 6
    with pytest.raises(ValueError, match="cannot resume.*seed"):
        _train(family, tmp_path / "resumed", steps=8, resume=True, seed=3, **options)


@pytest.mark.parametrize("family", ["gan", "dcgan"])
def test_a_gan_ships_the_average_of_its_generator(tmp_path, family):
    decay = 0.999
    after_one = aigc_export.load_checkpoint(_train(family, tmp_path / "one", steps=1, average_generator=decay)
                                            ["checkpoint"])
    summary = _train(family, tmp_path, steps=2, average_generator=decay)
    state = aigc_export.load_checkpoint(summary["checkpoint"])
    torch.manual_seed(0)  # the run's seed: the weights it started from
    initial = aigc_export.build_model(family, state["config"]).generator.state_dict()

    def generator(weights):
        return {k[len("generator."):]: v for k, v in weights.items() if k.startswith("generator.")}

    w1, w2 = generator(after_one["model"]), generator(state["model"])
    parameters = [name for name, _ in aigc_export.build_model(family, state["config"]).generator.named_parameters()]
    for name in parameters:  # bias-corrected: w1 after one step (w0 forgotten), (d·w1 + w2) / (1 + d) after two
        torch.testing.assert_close(after_one["generator_average"][name], w1[name], rtol=0, atol=0)
        expected = (decay * w1[name] + w2[name]) / (1 + decay)
        torch.testing.assert_close(state["generator_average"][name], expected, rtol=1e-6, atol=1e-6)
        assert not torch.equal(w2[name], initial[name]) and not torch.equal(w2[name], w1[name])

    # The file holds the average with BatchNorm statistics measured for it, not the live weights.
    model = aigc_export.build_model(family, state["config"])
    model.generator.load_state_dict(state["generator_average"])
    image_export.standing_statistics(model.generator, state["config"]["latent_dim"], seed=0)
    z = np.random.default_rng(1).standard_normal((5, state["config"]["latent_dim"])).astype(np.float32)
    with torch.no_grad():
        expected = model.generator(torch.from_numpy(z)).numpy()
    (images,) = ort.InferenceSession(summary["out"], providers=["CPUExecutionProvider"]).run(["images"], {"z": z})
    np.testing.assert_allclose(images, expected, atol=1e-5)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        live_images = model.generator.eval()(torch.from_numpy(z)).numpy()
    assert np.abs(images - live_images).max() > 1e-3
    provenance = json.loads({p.key: p.value for p in onnx.load(summary["out"]).metadata_props}["aigc.provenance"])
    assert (provenance["generator"], provenance["average_generator"]) == ("weight average", decay)


def test_the_average_forgets_the_random_start():
    from aigc_export.images.train import average_decay

    decays = np.array([average_decay(0.9999, step) for step in range(36_000)])
    assert decays[0] == 0 and np.all(np.diff(decays) > 0)  # the first step replaces the initial weights
    assert decays[-1] == pytest.approx(0.9999, abs=3e-6)  # the plain decay, once 1 − d^t ≈ 1
    assert average_decay(0.999, 10**6) == pytest.approx(0.999)
    # over T steps, step s's weights end with the share (1 − d) d^(T − s) / (1 − d^T): an average
    # with no start, whose shares sum to 1
    d, steps = 0.9, 50
    shares = np.zeros(steps)
    for step in range(steps):
        decay = average_decay(d, step)
        shares *= decay
        shares[step] = 1 - decay
    s = np.arange(1, steps + 1)
    np.testing.assert_allclose(shares, (1 - d) * d ** (steps - s) / (1 - d**steps), rtol=1e-12)


def test_gan_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="options of the GANs .*not of a vae"):
        _train("vae", tmp_path, augment=True)
    with pytest.raises(ValueError, match=r"average_generator: expected a decay in \(0, 1\).*got 1.5"):
        _train("gan", tmp_path, average_generator=1.5)
    summary = _train("gan", tmp_path, steps=1)  # off by default: the last step's generator ships
    provenance = json.loads({p.key: p.value for p in onnx.load(summary["out"]).metadata_props}["aigc.provenance"])
    assert (provenance["augment"], provenance["generator"]) == (False, "last step")
    assert "average_generator" not in provenance
    assert "generator_average" not in aigc_export.load_checkpoint(summary["checkpoint"])


def test_quality_lands_in_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(image_quality_probe, "measure_quality", lambda path, n: {"fid": 3.5, "n": n})
    summary = _train("gan", tmp_path, steps=2, quality_n=50)
    assert summary["quality"] == {"fid": 3.5, "n": 50}
    meta = {p.key: p.value for p in onnx.load(summary["out"]).metadata_props}
    assert json.loads(meta["aigc.provenance"])["quality"] == {"fid": 3.5, "n": 50}


def test_bad_sources_name_themselves(tmp_path):
    with pytest.raises(ValueError, match=r"'cifar'.*'mnist', 'digits'"):
        _train("gan", tmp_path, "cifar")
    with pytest.raises(ValueError, match="unknown image family 'lstm'"):
        _train("lstm", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty.*holds no images"):
        aigc_export.load_images(str(empty))
    with pytest.raises(ValueError, match="channels"):
        aigc_export.load_images("mnist", channels=2)


def test_data_sources_and_split(image_folder):
    mnist = aigc_export.load_images("mnist")
    assert mnist.images.shape == (5000, 1, 28, 28) and mnist.images.dtype == np.float32
    assert mnist.images.min() == -1.0 and mnist.images.max() == 1.0
    train, heldout = aigc_export.split_heldout(mnist)
    assert (len(train), len(heldout)) == (4000, 1000)
    assert np.bincount(heldout.labels).tolist() == [100] * 10
    again, _ = aigc_export.split_heldout(aigc_export.load_images("mnist"))
    assert np.array_equal(train.images, again.images)

    digits = aigc_export.load_images("digits", image_size=12, channels=3)
    assert digits.images.shape == (1797, 3, 12, 12) and digits.labels is not None
    folder = aigc_export.load_images(str(image_folder), image_size=10)
    assert folder.images.shape == (7, 1, 10, 10) and folder.labels is None
    assert -1.0 <= folder.images.min() and folder.images.max() <= 1.0


def test_train_classifier_writes_model_and_reference(tmp_path):
    summary = aigc_export.train_classifier(tmp_path, steps=5, progress=False)
    reference = np.load(tmp_path / "digits-reference.npz")
    f = summary["feature_dim"]
    assert reference["mu"].shape == (f,) and reference["mu"].dtype == np.float64
    assert reference["sigma"].shape == (f, f) and reference["sigma"].dtype == np.float64
    assert reference["heldout_features"].shape == (1000, f) and reference["heldout_features"].dtype == np.float32
    assert reference["heldout_logits"].shape == (1000, 10)
    assert np.allclose(reference["sigma"], reference["sigma"].T)

    session = ort.InferenceSession(summary["classifier"], providers=["CPUExecutionProvider"])
    _, heldout = aigc_export.split_heldout(aigc_export.load_images("mnist"))
    logits, features = session.run(None, {"images": heldout.images[:50]})
    np.testing.assert_allclose(features, reference["heldout_features"][:50], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits, reference["heldout_logits"][:50], rtol=0, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(summary["classifier"]).metadata_props}
    assert meta["aigc.family"] == "classifier"
    assert json.loads(meta["aigc.config"])["heldout_accuracy"] == round(summary["heldout_accuracy"], 4)


def test_stamp_quality_measures_a_file_as_its_export_would(tmp_path, monkeypatch):
    summary = _train("gan", tmp_path, steps=2)  # exported without a quality (quality_n=0)
    assert json.loads({p.key: p.value for p in onnx.load(summary["out"]).metadata_props}
                      ["aigc.provenance"])["quality"] is None
    provenance = aigc_export.stamp_quality(summary["out"], quality_n=150)
    assert provenance["quality"] == aigc_export.measure_quality(summary["out"], n=150)
    assert provenance["quality"]["n"] == 150 and provenance["steps"] == 2


def test_a_vae_ships_a_mixture_fitted_to_its_posterior_means(tmp_path):
    summary = _train("vae", tmp_path, steps=2, prior_components=3)
    state = aigc_export.load_checkpoint(summary["checkpoint"])
    config = json.loads({p.key: p.value for p in onnx.load(summary["out"]).metadata_props}["aigc.config"])
    assert config["latent_prior"] == state["latent_prior"]
    prior = state["latent_prior"]
    weights, means, scale = (np.array(prior[key]) for key in ("weights", "means", "scale_tril"))
    assert weights.shape == (3,) and means.shape == (3, config["latent_dim"])

    # EM's fixed point, checked against the encoder itself: the mixture's mean is the mean of the
    # training digits' posterior means, and its covariance theirs (+ sklearn's reg_covar 1e-6)
    model = aigc_export.build_model("vae", state["config"])
    model.load_state_dict(state["model"])
    train, _ = aigc_export.split_heldout(aigc_export.load_images("mnist"))
    with torch.no_grad():
        posterior_means = model.eval().encode(torch.from_numpy(train.images))[0].double().numpy()
    mean = weights @ means
    np.testing.assert_allclose(mean, posterior_means.mean(0), atol=1e-6)
    second_moment = np.einsum("k,kij->ij", weights, scale @ scale.transpose(0, 2, 1) + means[:, :, None] * means[:, None])
    covariance = np.cov(posterior_means, rowvar=False, bias=True) + 1e-6 * np.eye(len(mean))
    np.testing.assert_allclose(second_moment - np.outer(mean, mean), covariance, atol=1e-6)


def test_the_prior_option(tmp_path):
    summary = _train("vae", tmp_path, steps=1, prior_components=0)  # 0: standard-normal latents
    config = json.loads({p.key: p.value for p in onnx.load(summary["out"]).metadata_props}["aigc.config"])
    assert "latent_prior" not in config
    with pytest.raises(ValueError, match="prior_components: an option of the vae, not of a gan"):
        _train("gan", tmp_path, prior_components=3)
    with pytest.raises(ValueError, match=r"prior_components: expected an integer >= 0 .*got -1"):
        _train("vae", tmp_path, prior_components=-1)


def test_cli_prior_components(tmp_path):
    out = tmp_path / "v.onnx"
    result = subprocess.run(["aigc", "train", "vae", "--steps", "2", "--batch-size", "8", "--prior-components", "2",
                             "--quiet", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    config = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["aigc.config"])
    assert len(config["latent_prior"]["weights"]) == 2
    result = subprocess.run(["aigc", "train", "gan", "--steps", "1", "--prior-components", "2", "--out",
                             str(tmp_path / "g.onnx")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "prior_components: an option of the vae, not of a gan" in result.stderr
