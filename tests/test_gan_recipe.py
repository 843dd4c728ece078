# The GANs' training options in their config: the hinge loss beside the non-saturating BCE,
# Adam's betas, and for the DCGAN a spectrally normalised discriminator with the minibatch
# standard deviation (the recipe of the shipped DCGAN, README "Embedded models"). Each is
# checked for what it promises: the loss values against numpy, unit spectral norms, a
# discriminator that sees the whole batch; bad values are named; the CLI's --config reaches them;
# a checkpoint written before these keys existed still resumes; the learning rate's linear
# decay over a run's last steps (--lr-decay-from) resumes a run that had not decayed yet.
# DDP parity: test_ddp.py.
import json
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import aigc_export  # noqa: E402
from aigc_export.common.batchnorm import global_batch_std  # noqa: E402
from aigc_export.common.onnx_export import read_provenance  # noqa: E402
from aigc_export.images.train import _discriminator_loss, _generator_loss, lr_at  # noqa: E402

RECIPE = {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 16, "d_norm": "spectral", "d_dropout": 0.0,
          "minibatch_std": True, "loss": "hinge", "adam_betas": [0.0, 0.9]}


def _train(tmp_path, steps=2, config=RECIPE, **kwargs):
    kwargs = {"batch_size": 8, "progress": False, "quality_n": 0, "image_size": 8, **kwargs}
    return aigc_export.train_image_model("dcgan", "digits", steps, tmp_path / "dcgan.onnx", config=config, **kwargs)


def test_the_losses_against_numpy():
    on_real, on_fake = np.array([2.0, 0.5, -1.0]), np.array([-3.0, 0.2, 1.5])
    real, fake = torch.tensor(on_real), torch.tensor(on_fake)
    hinge = {"loss": "hinge", "real_label": 0.9}
    assert _discriminator_loss(hinge, real, fake).item() == pytest.approx(
        np.maximum(0, 1 - on_real).mean() + np.maximum(0, 1 + on_fake).mean())
    assert _generator_loss(hinge, fake).item() == pytest.approx(-on_fake.mean())

    def bce(logits, target):
        p = 1 / (1 + np.exp(-logits))
        return -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean()

    smoothed = {"loss": "bce", "real_label": 0.9}
    assert _discriminator_loss(smoothed, real, fake).item() == pytest.approx(bce(on_real, 0.9) + bce(on_fake, 0.0))
    assert _generator_loss(smoothed, fake).item() == pytest.approx(bce(on_fake, 1.0))


def test_a_spectral_discriminator_has_unit_spectral_norms():
    torch.manual_seed(0)
    d = aigc_export.build_model("dcgan", {**RECIPE, "height": 8, "width": 8}).discriminator.train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    for _ in range(200):  # each training forward is one step of the power iteration
        d(images)
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 3 and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    for layer in layers:
        weight = layer.weight.detach().flatten(1).numpy()  # what the layer multiplies by
        assert np.linalg.svd(weight, compute_uv=False)[0] == pytest.approx(1.0, abs=1e-2)

    batch_norm = aigc_export.build_model("dcgan", {**RECIPE, "d_norm": "batch", "height": 8, "width": 8})
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in batch_norm.discriminator.modules())


@pytest.mark.parametrize("minibatch_std", [True, False])
def test_the_minibatch_std_lets_the_discriminator_see_the_batch(minibatch_std):
    torch.manual_seed(0)
    d = aigc_export.build_model("dcgan", {**RECIPE, "minibatch_std": minibatch_std, "height": 8, "width": 8})
    d = d.discriminator.eval()
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    varied = images.clone()
    varied[1:] = varied[0]  # the same first image among copies of itself
    with torch.no_grad():
        first, among_copies = d(images)[0], d(varied)[0]
    assert (abs(first - among_copies).item() > 1e-4) == minibatch_std

    x = torch.randn(7, 3, 2, 2, dtype=torch.float64)
    assert global_batch_std(x).item() == pytest.approx(x.std(0).mean().item(), rel=1e-6)
    same = torch.ones(5, 4, dtype=torch.float64, requires_grad=True)  # variance 0: a finite gradient
    global_batch_std(same).backward()
    assert torch.isfinite(same.grad).all()


@pytest.mark.parametrize("change, message", [
    ({"loss": "wasserstein"}, "gan loss: expected one of bce, hinge, got 'wasserstein'"),
    ({"adam_betas": [0.5]}, r"gan adam_betas: expected two numbers in \[0, 1\)"),
    ({"adam_betas": [0.5, 1.0]}, r"gan adam_betas: expected two numbers in \[0, 1\)"),
    ({"adam_betas": ["0.5", 0.9]}, r"gan adam_betas: expected two numbers in \[0, 1\)"),
    ({"d_norm": "layer"}, "dcgan d_norm: expected one of batch, spectral, got 'layer'"),
    ({"minibatch_std": 1}, "dcgan minibatch_std: expected true or false, got 1"),
])
def test_bad_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        aigc_export.build_model("dcgan", {**RECIPE, **change})
    if not {"d_norm", "minibatch_std"} & set(change):
        with pytest.raises(ValueError, match=message):
            aigc_export.build_model("gan", change)


def test_the_recipe_trains_and_resumes(tmp_path):
    straight = _train(tmp_path / "straight", steps=4, average_generator=0.99)
    _train(tmp_path / "resumed", steps=2, average_generator=0.99)
    resumed = _train(tmp_path / "resumed", steps=4, average_generator=0.99, resume=True)
    assert resumed["resumed_from"] == 2 and resumed["final_losses"] == straight["final_losses"]
    state = aigc_export.load_checkpoint(straight["checkpoint"])
    assert {k: state["config"][k] for k in RECIPE} == RECIPE
    assert np.isfinite(list(straight["final_losses"].values())).all()


def test_a_checkpoint_from_before_these_settings_resumes(tmp_path):
    # A DCGAN checkpoint written before loss, adam_betas, d_norm and minibatch_std existed: its
    # config lacks them, and they had their defaults
    defaults = {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 16}
    straight = _train(tmp_path / "straight", steps=4, config=defaults)
    first = _train(tmp_path / "old", steps=2, config=defaults)
    state = aigc_export.load_checkpoint(first["checkpoint"])
    for key in ("loss", "adam_betas", "d_norm", "minibatch_std"):
        del state["config"][key]
    torch.save(state, first["checkpoint"])
    resumed = _train(tmp_path / "old", steps=4, config=defaults, resume=True)
    assert resumed["resumed_from"] == 2 and resumed["final_losses"] == straight["final_losses"]

    # weights of another layout: a clear error, not a state-dict traceback
    state["model"] = {k.replace("discriminator.head.", "discriminator.net."): v for k, v in state["model"].items()}
    torch.save(state, first["checkpoint"])
    with pytest.raises(ValueError, match="cannot resume from .*: its weights do not fit this model"):
        _train(tmp_path / "old", steps=4, config=defaults, resume=True)


def test_the_learning_rate_falls_linearly_to_the_last_step():
    schedule = {"decay_from": 6, "steps": 10}
    assert [lr_at(step, 2.0, schedule) for step in range(4, 10)] == [2.0, 2.0, 2.0, 1.5, 1.0, 0.5]
    assert lr_at(9, 2.0, None) == 2.0


def _weights(summary):
    return aigc_export.load_checkpoint(summary["checkpoint"])["model"]


def test_a_run_decays_its_learning_rate_and_resumes_onto_a_decay(tmp_path):
    decayed = _train(tmp_path / "decayed", steps=4, lr_decay_from=2)
    state = aigc_export.load_checkpoint(decayed["checkpoint"])
    assert state["lr_schedule"] == {"decay_from": 2, "steps": 4}
    assert [state["optimizers"][net]["param_groups"][0]["lr"] for net in ("g", "d")] == \
        [aigc_export.DEFAULT_LR["dcgan"] / 2] * 2
    assert read_provenance(tmp_path / "decayed" / "dcgan.onnx")["lr_schedule"] == state["lr_schedule"]
    constant = _train(tmp_path / "constant", steps=4)
    assert any(not torch.equal(a, b) for a, b in zip(_weights(decayed).values(), _weights(constant).values()))

    # 2 constant steps, then resumed with the decay from step 2: the run above, exactly
    _train(tmp_path / "resumed", steps=2)
    resumed = _train(tmp_path / "resumed", steps=4, lr_decay_from=2, resume=True)
    assert resumed["resumed_from"] == 2
    assert all(torch.equal(a, b) for a, b in zip(_weights(decayed).values(), _weights(resumed).values()))

    # a checkpoint that has decayed already cannot go on with another schedule
    _train(tmp_path / "late", steps=3, lr_decay_from=1)
    for other in ({}, {"lr_decay_from": 2}):
        with pytest.raises(ValueError, match="cannot resume from .*learning rate schedule"):
            _train(tmp_path / "late", steps=4, resume=True, **other)
    for bad in (4, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"lr_decay_from: expected a step in \\[0, steps = 4\\), got {bad}"):
            _train(tmp_path / "bad", steps=4, lr_decay_from=bad)


def test_cli_config_reaches_an_image_model(tmp_path):
    out = tmp_path / "d.onnx"
    command = ["aigc", "train", "dcgan", "--data", "digits", "--image-size", "8", "--steps", "2", "--batch-size", "8",
               "--quiet", "--out", str(out)]
    result = subprocess.run([*command, "--config", json.dumps(RECIPE), "--lr-decay-from", "1"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    state = aigc_export.load_checkpoint(json.loads(result.stdout)["checkpoint"])
    assert {k: state["config"][k] for k in RECIPE} == RECIPE
    assert state["lr_schedule"] == {"decay_from": 1, "steps": 2}
    result = subprocess.run([*command, "--config", '{"loss": "wasserstein"}'], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "gan loss: expected one of bce, hinge, got 'wasserstein'" in result.stderr
