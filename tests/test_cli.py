"""The `aigc` command end to end on the embedded models: PNG grids of the right size and
content, and one-line errors (no traceback, nothing written) for every kind of bad input."""

import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from aigc_engine import ImageGenerator
from aigc_engine.images.png import make_grid
from aigc_engine.artifacts.registry import embedded_names
from onnx_models import write_generator

IMAGE_MODELS = ["digits-gan", "digits-dcgan", "digits-vae"]


def aigc(*args, cwd=None):
    return subprocess.run(["aigc", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_the_three_digit_models_ship():
    assert set(IMAGE_MODELS) <= set(embedded_names())
    result = aigc("models")
    assert result.returncode == 0
    for name in IMAGE_MODELS:
        assert name in result.stdout


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_sample_writes_the_grid_of_the_python_api(tmp_path, name):
    out = tmp_path / "grid.png"
    result = aigc("sample", name, "-n", 16, "--seed", 3, "-o", out)
    assert result.returncode == 0, result.stderr
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (4 * 30 + 2, 4 * 30 + 2)
    expected = make_grid(ImageGenerator.load(name).sample(16, seed=3))
    np.testing.assert_array_equal(np.asarray(image), expected[..., 0])


def test_sample_without_a_seed_draws_a_fresh_one_and_prints_it(tmp_path):
    out = tmp_path / "fresh.png"
    result = aigc("sample", "digits-gan", "-n", 4, "-o", out)
    assert result.returncode == 0, result.stderr
    seed = int(result.stderr[result.stderr.index("[seed ") + 6:result.stderr.index("]")])
    assert 0 <= seed < 2**64
    expected = make_grid(ImageGenerator.load("digits-gan").sample(4, seed=seed))
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected[..., 0])


def test_truncation_and_interpolation(tmp_path):
    assert aigc("sample", "digits-dcgan", "-n", 8, "--truncation", 0.7, "-o", tmp_path / "t.png").returncode == 0
    result = aigc("sample", "digits-vae", "-n", 10, "--interpolate", 1, 2, "--nrow", 10, "-o", tmp_path / "i.png")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "i.png").size == (10 * 30 + 2, 30 + 2)


def test_eval_prints_the_quality_table():
    result = aigc("eval", "digits-gan", "-n", 500)
    assert result.returncode == 0, result.stderr
    assert "digits-gan" in result.stdout and "real held-out digits" in result.stdout


def test_sample_writes_the_format_the_extension_names(tmp_path):
    expected = make_grid(ImageGenerator.load("digits-gan").sample(4, seed=3))[..., 0]
    for name, image_format in (("grid.jpg", "JPEG"), ("grid.bmp", "BMP")):
        result = aigc("sample", "digits-gan", "-n", 4, "--seed", 3, "-o", tmp_path / name)
        assert result.returncode == 0, result.stderr
        image = Image.open(tmp_path / name)
        assert image.format == image_format and image.size == expected.shape[::-1]
        if image_format == "BMP":
            np.testing.assert_array_equal(np.asarray(image), expected)
        else:  # lossy: close on average
            assert np.abs(np.asarray(image).astype(float) - expected).mean() < 6


def test_eval_accepts_the_least_sample_count_without_warnings():
    result = aigc("eval", "digits-vae", "-n", 129, "--json")
    assert result.returncode == 0 and result.stderr == ""
    assert json.loads(result.stdout)["digits-vae"]["n"] == 129


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "text.onnx").write_text("not a model\n")
    write_generator(tmp_path / "bare.onnx", metadata={"aigc.family": None})
    write_generator(tmp_path / "future.onnx", format_version="9")
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["sample", "digits-nope"], "unknown model 'digits-nope'"),
    (["sample", "{dir}/text.onnx"], "not an ONNX model"),
    (["sample", "{dir}/bare.onnx"], "no 'aigc.family' metadata"),
    (["sample", "{dir}/future.onnx"], "newer than this aigc-engine reads"),
    (["sample", "digits-gan", "-n", "0"], "n: expected an integer >= 1, got 0"),
    (["sample", "digits-gan", "-n", "-4"], "n: expected an integer >= 1"),
    (["sample", "digits-gan", "-n", "10000000000000"], "GiB of memory"),
    (["sample", "digits-gan", "--truncation", "0"], "truncation: expected > 0"),
    (["sample", "digits-gan", "--truncation", "-1"], "truncation: expected > 0"),
    (["sample", "digits-gan", "--seed", "-1"], "seed"),
    (["sample", "digits-gan", "-n", "ten"], "invalid int value"),
    (["sample", "digits-gan", "-o", "{dir}/missing/out.png"], "does not exist"),
    (["sample", "digits-gan", "-o", "{dir}/folder"], "is a directory"),
    (["eval", "digits-gan", "-n", "0"], "n: expected an integer >= 1"),
    (["eval", "digits-vae", "-n", "1"], "needs more samples than features: at least 129, got 1"),
    (["eval", "digits-vae", "-n", "2"], "at least 129, got 2"),
    (["eval", "digits-gan", "-n", "128"], "at least 129, got 128"),
    (["sample", "digits-gan", "--nrow", "0"], "--nrow: expected an integer >= 1, got 0"),
    (["sample", "digits-gan", "-o", "{dir}/out.xyz"], "the extension .xyz names no image format"),
])
def test_bad_input_gets_one_line_and_writes_nothing(bad_files, args, message):
    before = sorted(p.name for p in bad_files.rglob("*"))
    out = ["-o", bad_files / "out.png"] if args[0] == "sample" and "-o" not in args else []
    result = aigc(*[a.format(dir=bad_files) for a in args], *out, cwd=bad_files)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aigc: error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in bad_files.rglob("*")) == before


def _special_outputs(tmp_path):
    """A FIFO, a socket, a character device (as root), symbolic links: -o refuses each."""
    import os
    import socket
    import stat

    os.mkfifo(tmp_path / "fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "sock"))
    (tmp_path / "target.png").write_bytes(b"keep")
    os.symlink(tmp_path / "target.png", tmp_path / "link.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    cases = [("fifo", "a FIFO"), ("sock", "a socket"), ("link.png", "a symbolic link"),
             ("dangling.png", "a symbolic link")]
    try:  # a device node of our own (null's numbers), never /dev/null itself
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        cases.append(("null", "a character device"))
    except PermissionError:
        pass
    return listener, cases


def test_sample_writes_only_regular_files(tmp_path):
    import os

    listener, cases = _special_outputs(tmp_path)
    try:
        for name, kind in cases:
            before = os.lstat(tmp_path / name)
            result = aigc("sample", "digits-gan", "-n", 1, "-o", tmp_path / name)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and len(lines) == 1, result.stderr
            assert lines[0].startswith("aigc: error:") and str(tmp_path / name) in lines[0] and kind in lines[0]
            after = os.lstat(tmp_path / name)
            assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)  # untouched
        assert (tmp_path / "target.png").read_bytes() == b"keep"
        assert not list(tmp_path.glob(".*.tmp"))
    finally:
        listener.close()
    (tmp_path / "regular.png").write_bytes(b"old")
    assert aigc("sample", "digits-gan", "-n", 1, "-o", tmp_path / "regular.png").returncode == 0
    assert (tmp_path / "regular.png").read_bytes().startswith(b"\x89PNG")
