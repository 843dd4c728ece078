"""Reading a .safetensors file into numpy arrays, without torch.

The format: an 8-byte little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then
the tensors' bytes, offsets counted from the end of the header. Parsed here rather than
through the `safetensors` package because its numpy API has no bfloat16, the dtype many
fine-tuned checkpoints are saved in. The file is memory-mapped: float32 tensors are
views of it, half-precision ones are widened to float32.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import ModelFileError

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_HEADER_BYTES = 100 << 20  # the format's own limit on the JSON header


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in the file by name; BF16 comes back as float32, the rest in its own dtype."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
            raise ModelFileError(f"{path}: not a safetensors file (its header length does not fit the file's "
                                 f"{size} bytes)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, ValueError) as error:
            raise ModelFileError(f"{path}: not a safetensors file (its header is not JSON: {error})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors file (its header is not a JSON object)")
    start = 8 + length
    data = np.memmap(path, np.uint8, mode="r", offset=start) if size > start else np.zeros(0, np.uint8)
    return {name: _tensor(path, name, info, data) for name, info in header.items() if name != "__metadata__"}


def _tensor(path: Path, name: str, info, data: np.ndarray) -> np.ndarray:
    try:
        dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise ModelFileError(f"{path}: tensor {name} has no valid dtype, shape and data_offsets") from None
    if dtype not in _DTYPES:
        raise ModelFileError(f"{path}: tensor {name} is {dtype}; readable: {', '.join(_DTYPES)}")
    item = np.dtype(_DTYPES[dtype])
    need = math.prod(shape) * item.itemsize
    if (any(d < 0 for d in shape) or not isinstance(begin, int) or not isinstance(end, int)
            or not 0 <= begin <= end <= len(data) or end - begin != need):
        raise ModelFileError(f"{path}: tensor {name} of shape {shape} ({dtype}) needs {need} bytes, but its "
                             f"data_offsets [{begin}, {end}] do not give them within the file")
    array = data[begin:end].view(item).reshape(shape)
    if dtype == "BF16":  # the upper half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array
