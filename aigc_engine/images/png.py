"""Image output: a grid of uint8 images written as one file, PNG with no imaging library,
another format its extension names (.jpg, .webp, .bmp...) through Pillow where installed.

Images come as (n, H, W, C) uint8 with C = 1 (grey) or 3 (RGB). The file is written to
a temporary name beside the target and renamed into place, so a failure never leaves
a half-written PNG behind. The target must be new or a regular file: the rename would
replace a FIFO, a device (as root, /dev/null itself), a socket or a symbolic link.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import AigcError

_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels → PNG colour type (grey, RGB, RGBA)


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """(n, H, W, C) uint8 → one (rows·(H+p)+p, nrow·(W+p)+p, C) image; nrow defaults to ⌈√n⌉."""
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise AigcError(f"images: expected a non-empty uint8 (n, H, W, C) array, got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    nrow = math.ceil(math.sqrt(n)) if nrow is None else nrow
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise AigcError(f"nrow: expected an integer >= 1, got {nrow!r}")
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        grid[top:top + h, left:left + w] = images[i]
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, C) uint8, C in {1, 3, 4} → PNG bytes (8-bit, no filter, zlib level 6)."""
    if image.ndim != 3 or image.dtype != np.uint8 or image.shape[2] not in _COLOR_TYPES:
        raise AigcError(f"image: expected uint8 (H, W, 1|3|4), got {image.dtype} {image.shape}")
    height, width, channels = image.shape
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # filter byte 0 on each row
    rows[:, 1:] = image.reshape(height, width * channels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
            chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_writable(path: str | Path) -> Path:
    """Fail before any work if `path` cannot be written (missing folder, no permission) or
    is not a regular file. A symbolic link is refused rather than followed or replaced:
    writing through a link in a shared folder is the classic way to make a root process
    overwrite a file of the link maker's choosing, and replacing it would surprise."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = None  # missing, or a folder on the way is: said below
    if mode is not None and stat.S_ISLNK(mode):
        raise AigcError(f"output '{path}' is a symbolic link (to '{os.readlink(path)}'): give the target path; "
                        "-o writes only regular files")
    for is_kind, kind in _KINDS:
        if mode is not None and is_kind(mode):
            raise AigcError(f"output '{path}' is {kind}" + ("" if kind == "a directory" else
                                                           ", not a regular file: -o writes only regular files"))
    if not folder.is_dir():
        raise AigcError(f"output '{path}': folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise AigcError(f"output '{path}': permission denied")
    return path


def write_atomic(path: str | Path, data: bytes) -> None:
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def output_format(path: str | Path) -> str:
    """The image format `path`'s extension names: "PNG" (written here) or one Pillow writes."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return "PNG"
    try:
        from PIL import Image
    except ImportError:
        raise AigcError(f"output '{path}': without Pillow only .png is written (pip install pillow for "
                        f"{suffix or 'other formats'})") from None
    Image.init()
    image_format = Image.registered_extensions().get(suffix)
    if image_format not in Image.SAVE:
        named = f"the extension {suffix}" if suffix else "a name without an extension"
        raise AigcError(f"output '{path}': {named} names no image format Pillow writes (.png, .jpg, .webp, .bmp, ...)")
    return image_format


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """(H, W, C) uint8 → the bytes of a file in `image_format` (see output_format)."""
    if image_format == "PNG":
        return encode_png(image)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, format=image_format)
    return buffer.getvalue()


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None, padding: int = 2) -> Path:
    """Write (n, H, W, C) uint8 images as one grid at `path`, in the format its extension
    names (see output_format); returns the path."""
    image_format = output_format(check_writable(path))
    write_atomic(path, encode_image(make_grid(images, nrow, padding), image_format))
    return Path(path)
