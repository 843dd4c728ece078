"""PNG grids decode (with Pillow, an independent decoder) to exactly the pixels written."""

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
