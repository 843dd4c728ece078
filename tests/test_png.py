"""PNG grids decode (with Pillow, an independent decoder) to exactly the pixels written; other
extensions get the format they name (through Pillow) or a clear refusal."""

import os

import numpy as np
import pytest
from PIL import Image

from aigc_engine import AigcError, save_grid
from aigc_engine.images.png import make_grid


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_png_round_trip(tmp_path, channels, mode):
    images = np.random.default_rng(0).integers(0, 256, (5, 7, 9, channels), dtype=np.uint8)
    path = save_grid(images, tmp_path / "grid.png", nrow=2, padding=1)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0600
    decoded = np.asarray(Image.open(path))
    assert Image.open(path).mode == mode
    expected = make_grid(images, nrow=2, padding=1)
    assert decoded.shape[:2] == (3 * 8 + 1, 2 * 10 + 1)
    np.testing.assert_array_equal(decoded.reshape(expected.shape), expected)
    # Image 3 sits in row 1, column 1.
    np.testing.assert_array_equal(expected[9:16, 11:20], images[3])


def test_grid_default_rows_are_ceil_sqrt_n():
    # 10 images: 4 per row, 3 rows.
    assert make_grid(np.zeros((10, 2, 2, 1), np.uint8), padding=0).shape == (6, 8, 1)


@pytest.mark.parametrize("nrow", [0, -1, 1.5, True])
def test_bad_nrow_is_refused_not_replaced(nrow):
    with pytest.raises(AigcError, match="nrow: expected an integer >= 1"):
        make_grid(np.zeros((4, 2, 2, 1), np.uint8), nrow=nrow)


@pytest.mark.parametrize("name, image_format, lossless", [
    ("grid.bmp", "BMP", True), ("grid.TIFF", "TIFF", True), ("grid.jpg", "JPEG", False),
    ("grid.jpeg", "JPEG", False), ("grid.webp", "WEBP", False), ("grid.PNG", "PNG", True)])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_extension_names_the_format(tmp_path, name, image_format, lossless, channels):
    Image.init()
    if image_format not in Image.SAVE:
        pytest.skip(f"this Pillow writes no {image_format}")
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, channels), dtype=np.uint8)
    images[:, :16] = 200  # flat, so that the grid's 8×8 block at (8, 8) is: lossy formats keep it within a few levels
    path = save_grid(images, tmp_path / name, nrow=2)
    opened = Image.open(path)
    assert opened.format == image_format
    decoded = np.asarray(opened.convert("L" if channels == 1 else "RGB")).reshape(make_grid(images, nrow=2).shape)
    if lossless:
        np.testing.assert_array_equal(decoded, make_grid(images, nrow=2))
    else:
        assert np.abs(decoded[8:16, 8:16].astype(int) - 200).max() <= 8


@pytest.mark.parametrize("name, message", [("grid.xyz", "the extension .xyz names no image format"),
                                           ("grid", "a name without an extension names no image format")])
def test_unknown_extensions_are_refused(tmp_path, name, message):
    with pytest.raises(AigcError, match=message):
        save_grid(np.zeros((1, 2, 2, 1), np.uint8), tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_without_pillow_only_png_is_written(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    images = np.zeros((1, 2, 2, 1), np.uint8)
    with pytest.raises(AigcError, match=r"without Pillow only \.png is written \(pip install pillow for \.jpg\)"):
        save_grid(images, tmp_path / "grid.jpg")
    assert not list(tmp_path.iterdir())
    assert save_grid(images, tmp_path / "grid.png").read_bytes().startswith(b"\x89PNG")


def test_unwritable_outputs_fail_before_writing(tmp_path):
    images = np.zeros((1, 2, 2, 1), np.uint8)
    with pytest.raises(AigcError, match="does not exist"):
        save_grid(images, tmp_path / "missing" / "x.png")
    with pytest.raises(AigcError, match="is a directory"):
        save_grid(images, tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(AigcError, match="permission denied"):
            save_grid(images, locked / "x.png")
    finally:
        locked.chmod(0o700)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]
