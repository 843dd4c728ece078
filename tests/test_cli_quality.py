"""`aigc reconstruct` (a grid `aigc sample` wrote, one digit, a seed) against the Python API,
and `aigc eval`: a VAE's held-out figures, a text model's, and `--all` over every shipped model."""

import json
import subprocess

import numpy as np
import pytest

from aigc_engine import ImageGenerator
from aigc_engine.artifacts.registry import embedded_names
from aigc_engine.images.png import make_grid, read_image, save_grid, split_grid
from aigc_engine.images.quality import REFERENCE_PATH


def aigc(*args):
    return subprocess.run(["aigc", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def vae():
    return ImageGenerator.load("digits-vae")


def test_reconstruct_a_grid_that_sample_wrote(tmp_path, vae):
    assert aigc("sample", "digits-vae", "-n", 7, "--nrow", 3, "--seed", 2, "-o", tmp_path / "in.png").returncode == 0
    result = aigc("reconstruct", tmp_path / "in.png", "-o", tmp_path / "out.png")
    assert result.returncode == 0, result.stderr
    assert "wrote 7 reconstructions (28×28)" in result.stderr and "[posterior mean]" in result.stderr
    written = read_image(tmp_path / "out.png")
    samples = vae.sample(7, seed=2)
    np.testing.assert_array_equal(written, make_grid(vae.reconstruct(samples), nrow=3))  # the input's layout
    np.testing.assert_array_equal(split_grid(written, 28, 28), vae.reconstruct(samples))


def test_reconstruct_one_digit_with_a_seed(tmp_path, vae):
    digit = np.load(REFERENCE_PATH)["heldout_images"][17:18]
    save_grid(digit, tmp_path / "digit.png", padding=0)  # a bare 28×28 image
    for name in ("a.png", "b.png"):
        result = aigc("reconstruct", tmp_path / "digit.png", "--seed", 5, "-o", tmp_path / name)
        assert result.returncode == 0 and "[seed 5]" in result.stderr, result.stderr
    written = read_image(tmp_path / "a.png")
    assert written.shape == (28, 28, 1)
    np.testing.assert_array_equal(written, vae.reconstruct(digit, seed=5)[0])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--model", "digits-gan"], "digits-gan.onnx is a 'gan' model, which has no encoder"),
    (["-o", "{dir}/out.xyz"], "the extension .xyz names no image format"),
    (["{dir}/odd.png"], "30×25 pixels is neither one 28×28 image nor a grid of them"),
    (["{dir}/missing.png"], "missing.png': cannot read it"),
])
def test_reconstruct_refuses_with_one_line(tmp_path, args, message):
    save_grid(np.zeros((1, 25, 30, 1), np.uint8), tmp_path / "odd.png", padding=0)
    save_grid(np.zeros((1, 28, 28, 1), np.uint8), tmp_path / "digit.png", padding=0)
    args = [a.format(dir=tmp_path) for a in args]
    source = [] if args[0].endswith(".png") else [tmp_path / "digit.png"]
    output = [] if "-o" in args else ["-o", tmp_path / "out.png"]
    result = aigc("reconstruct", *source, *args, *output)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("aigc: error:"), result.stderr
    assert message in lines[0]
    assert not (tmp_path / "out.png").exists()


def test_eval_of_the_vae_adds_its_heldout_figures():
    result = aigc("eval", "digits-vae", "-n", 129, "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)["digits-vae"]
    assert figures["n"] == 129 and figures["heldout_digits"] == 1000
    assert 0 < figures["reconstruction_mse"] < 0.05 and 0 < figures["elbo_bits_per_dim"] < 0.5
    table = aigc("eval", "digits-vae", "-n", 129)
    assert "recon MSE" in table.stdout and f"{figures['reconstruction_mse']:.4f}" in table.stdout


def test_eval_all_prints_every_shipped_model():
    result = aigc("eval", "--all", "-n", 129, "--windows", 2)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert set(embedded_names()) <= rows and "real" in rows
    assert "bits/byte" in result.stdout and "Fréchet" in result.stdout


@pytest.mark.parametrize("args, message", [
    ([], "give one MODEL, or --all"),
    (["digits-gan", "--all"], "give --all or a MODEL, not both"),
    (["pycode-lstm", "--truncation", "0.5"], "--truncation: applies to image models"),
    (["pycode-lstm", "--windows", "0"], "--windows: expected an integer >= 1, got 0"),
])
def test_eval_refuses_with_one_line(args, message):
    result = aigc("eval", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr
