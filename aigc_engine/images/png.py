"""Image files: a grid of uint8 images written as one file, PNG with no imaging library,
another format its extension names (.jpg, .webp, .bmp...) through Pillow where installed;
and image files read back (read_image), a grid cut back into its images (split_grid).

Images come as (n, H, W, C) uint8 with C = 1 (grey) or 3 (RGB). The file is written to
a temporary name beside the target and renamed into place, so a failure never leaves
a half-written PNG behind. The target must be new or a regular file: the rename would
replace a FIFO, a device (as root, /dev/null itself), a socket or a symbolic link.
PNG is read here too (8-bit grey, grey + alpha, RGB, RGBA; not interlaced: what aigc and
most tools write); other PNG variants and other formats are read through Pillow.
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
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type → channels, for the 8-bit types read here
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def split_grid(grid: np.ndarray, height: int, width: int, padding: int = 2) -> np.ndarray:
    """make_grid's inverse: (rows·(h+p)+p, cols·(w+p)+p, C) → (rows·cols, h, w, C), row by row.
    Cells after the last image that are all zero (make_grid's fill) are left out."""
    rows, remainder_h = divmod(grid.shape[0] - padding, height + padding)
    cols, remainder_w = divmod(grid.shape[1] - padding, width + padding)
    if rows < 1 or cols < 1 or remainder_h or remainder_w:
        raise AigcError(f"image: {grid.shape[1]}×{grid.shape[0]} pixels is neither one {width}×{height} image "
                        f"nor a grid of them with {padding}-pixel padding (cols·{width + padding}+{padding} × "
                        f"rows·{height + padding}+{padding})")
    cells = [grid[padding + r * (height + padding):][:height, padding + c * (width + padding):][:, :width]
             for r in range(rows) for c in range(cols)]
    while len(cells) > 1 and not cells[-1].any():
        cells.pop()
    return np.stack(cells)


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


def read_image(path: str | Path) -> np.ndarray:
    """An image file → uint8 (H, W, C), C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA):
    PNG decoded here where it can be (decode_png), anything else through Pillow."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AigcError(f"input '{path}': cannot read it ({error.strerror or error})") from None
    if data.startswith(_SIGNATURE):
        image = decode_png(data, str(path))
        if image is not None:
            return image
    return _read_with_pillow(path, data)


def decode_png(data: bytes, source: str = "PNG") -> np.ndarray | None:
    """PNG bytes → uint8 (H, W, C) for 8-bit, non-interlaced grey, grey + alpha, RGB and RGBA;
    None for the other variants (palette, 1/2/4/16-bit, interlaced). Damaged data (a bad
    chunk checksum, a truncated or undecompressable stream) raises AigcError naming `source`."""
    chunks, position, header = [], len(_SIGNATURE), None
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        crc = data[position + 8 + length:position + 12 + length]
        if len(body) != length or len(crc) != 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            raise AigcError(f"{source}: a damaged PNG (chunk {kind!r} is truncated or fails its checksum)")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    if header is None or len(header) != 13 or not chunks:
        raise AigcError(f"{source}: a damaged PNG (no image header or no image data)")
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or interlace or color_type not in _CHANNELS:
        return None
    channels = _CHANNELS[color_type]
    stride = width * channels
    try:
        raw = zlib.decompress(b"".join(chunks))
    except zlib.error as error:
        raise AigcError(f"{source}: a damaged PNG ({error})") from None
    if len(raw) != height * (stride + 1):
        raise AigcError(f"{source}: a damaged PNG ({len(raw)} bytes of pixels for {width}×{height}×{channels})")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    pixels = np.empty((height, stride), np.uint8)
    previous = np.zeros(stride, np.uint8)
    for y in range(height):
        pixels[y] = previous = _unfilter(int(rows[y, 0]), rows[y, 1:], previous, channels, source)
    return pixels.reshape(height, width, channels)


def _unfilter(kind: int, line: np.ndarray, above: np.ndarray, bpp: int, source: str) -> np.ndarray:
    """One scanline's bytes from its filtered ones (PNG spec §9: None, Sub, Up, Average, Paeth)."""
    if kind == 0:
        return line
    if kind == 1:  # Sub: each byte adds the one bpp to its left, so a running sum per channel
        return (np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint64) % 256).astype(np.uint8).ravel()
    if kind == 2:
        return line + above  # uint8 arithmetic wraps modulo 256, as the spec's does
    if kind not in (3, 4):
        raise AigcError(f"{source}: a damaged PNG (unknown filter type {kind})")
    out, up = bytearray(line.tobytes()), above.tobytes()
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 3:
            out[i] = (out[i] + (left + up[i]) // 2) & 0xFF
            continue
        upper_left = up[i - bpp] if i >= bpp else 0
        estimate = left + up[i] - upper_left
        a, b, c = abs(estimate - left), abs(estimate - up[i]), abs(estimate - upper_left)
        out[i] = (out[i] + (left if a <= b and a <= c else up[i] if b <= c else upper_left)) & 0xFF
    return np.frombuffer(bytes(out), np.uint8)


def _read_with_pillow(path: Path, data: bytes) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        kind = "this PNG variant (palette, 1/2/4/16-bit or interlaced)" if data.startswith(_SIGNATURE) else \
            "formats other than PNG"
        raise AigcError(f"input '{path}': without Pillow, {kind} cannot be read (pip install pillow)") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode.startswith("I") or image.mode == "F":
                raise AigcError(f"input '{path}': {image.mode} pixels (integer or float, beyond 8 bits) are not "
                                "read: save it with 8-bit channels")
            pixels = np.asarray(image.convert({"1": "L", "L": "L", "LA": "LA", "RGB": "RGB"}.get(image.mode, "RGBA")))
    except (UnidentifiedImageError, OSError) as error:
        raise AigcError(f"input '{path}': not an image file Pillow reads ({error})") from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


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
