"""PNG grids decode (with Pillow, an independent decoder) to exactly the pixels written; other
extensions get the format they name (through Pillow) or a clear refusal. PNGs Pillow writes
read back (here, not through Pillow) to exactly its pixels; grids split back into their images."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from aigc_engine import AigcError, save_grid
from aigc_engine.images.png import decode_png, make_grid, read_image, split_grid


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


@pytest.mark.parametrize("mode, channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_reading_png_gives_the_pixels_pillow_wrote(tmp_path, mode, channels):
    # Smooth gradients plus noise: Pillow's adaptive filtering then uses all five filter types.
    rng = np.random.default_rng(channels)
    ramp = np.add.outer(np.arange(37), 3 * np.arange(53))[..., None] + rng.integers(0, 40, (37, 53, channels))
    pixels = (ramp % 256).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(tmp_path / "in.png")
    assert decode_png((tmp_path / "in.png").read_bytes()) is not None  # read here, not by Pillow
    np.testing.assert_array_equal(read_image(tmp_path / "in.png"), pixels)


def test_reading_what_save_grid_wrote(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 1), dtype=np.uint8)
    save_grid(images, tmp_path / "grid.png", nrow=3)
    np.testing.assert_array_equal(read_image(tmp_path / "grid.png"), make_grid(images, nrow=3))


def test_other_variants_and_formats_are_read_through_pillow(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    palette = Image.fromarray(pixels).quantize(16)
    palette.save(tmp_path / "palette.png")
    assert decode_png((tmp_path / "palette.png").read_bytes()) is None
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png")[..., :3], np.asarray(palette.convert("RGB")))
    Image.fromarray(pixels).save(tmp_path / "image.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "image.bmp"), pixels)
    Image.fromarray((pixels[..., 0].astype(np.uint16) * 257)).save(tmp_path / "deep.png")  # 16-bit grey
    with pytest.raises(AigcError, match="deep.png': I;16 pixels .* are not read"):
        read_image(tmp_path / "deep.png")


def test_damaged_and_missing_files_get_a_clear_error(tmp_path):
    save_grid(np.zeros((1, 4, 4, 1), np.uint8), tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[-20] ^= 0xFF  # inside IDAT
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(AigcError, match="bad.png: a damaged PNG .*fails its checksum"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(AigcError, match="notes.txt': not an image file Pillow reads"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(AigcError, match="missing.png': cannot read it"):
        read_image(tmp_path / "missing.png")


@pytest.mark.parametrize("n, nrow", [(1, 1), (6, 3), (7, 3), (10, 4)])
def test_split_grid_undoes_make_grid(n, nrow):
    images = np.random.default_rng(n).integers(1, 256, (n, 5, 4, 1), dtype=np.uint8)
    np.testing.assert_array_equal(split_grid(make_grid(images, nrow=nrow), 5, 4), images)


def test_split_grid_refuses_other_sizes():
    with pytest.raises(AigcError, match=r"30×25 pixels is neither one 4×5 image nor a grid of them"):
        split_grid(np.zeros((25, 30, 1), np.uint8), 5, 4)


def _filtered_png(pixels: np.ndarray) -> bytes:
    """An 8-bit PNG whose row y uses filter type y % 5 (PNG spec §9, written plainly here)."""
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels).astype(int)
    out = []
    for y in range(height):
        above = rows[y - 1] if y else np.zeros_like(rows[0])
        left = np.concatenate([np.zeros(channels, int), rows[y, :-channels]])
        upper_left = np.concatenate([np.zeros(channels, int), above[:-channels]])
        estimate = left + above - upper_left
        a, b, c = np.abs(estimate - left), np.abs(estimate - above), np.abs(estimate - upper_left)
        paeth = np.where((a <= b) & (a <= c), left, np.where(b <= c, above, upper_left))
        predictor = [0, left, above, (left + above) // 2, paeth][y % 5]
        out.append(bytes([y % 5]) + ((rows[y] - predictor) % 256).astype(np.uint8).tobytes())

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(out)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_filter_type_is_undone(tmp_path, channels):
    pixels = np.random.default_rng(channels).integers(0, 256, (11, 7, channels), dtype=np.uint8)
    (tmp_path / "filtered.png").write_bytes(_filtered_png(pixels))
    pillow = np.asarray(Image.open(tmp_path / "filtered.png"))
    np.testing.assert_array_equal(pillow.reshape(pixels.shape), pixels)  # the test's encoder is right
    np.testing.assert_array_equal(decode_png((tmp_path / "filtered.png").read_bytes()), pixels)
