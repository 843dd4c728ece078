"""Checks of a model file's weights (its initializers), before anything runs them.

Every initializer: its data inside the file, as many values as its shape says and, if
floating point, finite (NaN or inf would surface only as NaN logits at the first
request). Text models: each weight the runtime reads by name — GPT-2's for gpt, the
torch nn.LSTM's for lstm — present, float32, of the shape the config implies, and none
for a layer beyond n_layer. Each tensor is read in place from the file's bytes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import ModelFileError

# Fixed-size element types: bytes per value in raw_data, and the typed field otherwise.
_ITEMSIZE = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
             TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2,
             TensorProto.INT32: 4, TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
             TensorProto.BOOL: 1}
_FIELD = {TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data", TensorProto.INT64: "int64_data",
          TensorProto.UINT32: "uint64_data", TensorProto.UINT64: "uint64_data"}  # the rest: int32_data
_FLOATS = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}
_CHECKED_FINITE = set(_FLOATS) | {TensorProto.BFLOAT16}


def dtype_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"unknown type {data_type}"


def check_initializers(path: Path, graph: onnx.GraphProto) -> None:
    """Each initializer's data is in the file, fits its shape, and is finite if floating point."""
    for tensor in graph.initializer:
        name, dims = tensor.name, list(tensor.dims)
        if any(d < 0 for d in dims):
            raise ModelFileError(f"{path}: weight {name} has a negative size in its shape {dims}")
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            raise ModelFileError(f"{path}: weight {name} is stored outside the file; a model file must hold "
                                 "all its weights")
        itemsize = _ITEMSIZE.get(tensor.data_type)
        if itemsize is None:
            continue  # strings, 4- and 8-bit floats: left to onnxruntime
        count = math.prod(dims)
        if tensor.HasField("raw_data"):
            size = len(tensor.raw_data) // itemsize if len(tensor.raw_data) % itemsize == 0 else -1
        else:
            size = len(getattr(tensor, _FIELD.get(tensor.data_type, "int32_data")))
        if size != count:
            held = size if size >= 0 else "a partial number of"
            raise ModelFileError(f"{path}: weight {name} has shape {dims} ({count} values), but the file holds "
                                 f"{held} {dtype_name(tensor.data_type)} values")
        if count and tensor.data_type in _CHECKED_FINITE:
            _check_finite(path, tensor)


def _check_finite(path: Path, tensor: onnx.TensorProto) -> None:
    if tensor.data_type == TensorProto.BFLOAT16:  # exponent bits all ones: inf or NaN
        bits = (np.frombuffer(tensor.raw_data, np.uint16) if tensor.HasField("raw_data")
                else np.asarray(tensor.int32_data, np.uint32).astype(np.uint16))
        bad = (bits & 0x7F80) == 0x7F80
        if bad.any():
            raise ModelFileError(f"{path}: weight {tensor.name} has NaN or inf values (the first at flat index "
                                 f"{int(np.argmax(bad))}): the model is broken")
        return
    dtype = _FLOATS[tensor.data_type]
    if tensor.HasField("raw_data"):
        values = np.frombuffer(tensor.raw_data, dtype=np.dtype(dtype).newbyteorder("<"))
    elif tensor.data_type == TensorProto.FLOAT16:  # stored as the bits, in int32_data
        values = np.asarray(tensor.int32_data, np.uint32).astype(np.uint16).view(np.float16)
    else:
        values = np.asarray(tensor.float_data if tensor.data_type == TensorProto.FLOAT else tensor.double_data, dtype)
    # min and max propagate NaN and meet any ±inf, without a temporary the size of the tensor.
    if not (np.isfinite(values.min()) and np.isfinite(values.max())):
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ModelFileError(f"{path}: weight {tensor.name} has NaN or inf values (the first, {values[first]}, at "
                             f"flat index {first}): the model is broken")


def gpt_weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The weights the native decoder (csrc/runtime/gpt.cc) reads, in GPT-2's Conv1D (in, out) layout."""
    c = config["n_embd"]
    shapes = {"transformer.wte.weight": (config["vocab_size"], c), "transformer.wpe.weight": (config["n_positions"], c),
              "transformer.ln_f.weight": (c,), "transformer.ln_f.bias": (c,)}
    for i in range(config["n_layer"]):
        p = f"transformer.h.{i}."
        for name, k, n in (("attn.c_attn", c, 3 * c), ("attn.c_proj", c, c), ("mlp.c_fc", c, 4 * c),
                           ("mlp.c_proj", 4 * c, c)):
            shapes[p + name + ".weight"] = (k, n)
            shapes[p + name + ".bias"] = (n,)
        for norm in ("ln_1", "ln_2"):
            shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (c,)
    return shapes


def lstm_weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Embedding (V, n_embd) → nn.LSTM (gates 4·hidden) → Linear head (V, hidden), by their torch names."""
    v, e, h = config["vocab_size"], config["n_embd"], config["hidden_size"]
    shapes = {"embedding.weight": (v, e), "head.weight": (v, h), "head.bias": (v,)}
    for i in range(config["n_layer"]):
        shapes[f"lstm.weight_ih_l{i}"] = (4 * h, e if i == 0 else h)
        shapes[f"lstm.weight_hh_l{i}"] = (4 * h, h)
        shapes[f"lstm.bias_ih_l{i}"] = shapes[f"lstm.bias_hh_l{i}"] = (4 * h,)
    return shapes


WEIGHTS_PER_LAYER = {"gpt": 12, "lstm": 4}
_LAYER_OF = {"gpt": re.compile(r"transformer\.h\.(\d+)\."), "lstm": re.compile(r"lstm\.\w+_l(\d+)$")}


def check_text_weights(path: Path, family: str, config: dict, graph: onnx.GraphProto) -> None:
    """The named weights agree with the config. config's sizes are already bounded by the graph."""
    tensors = {t.name: t for t in graph.initializer}
    n_layer = config["n_layer"]
    for name in tensors:
        match = _LAYER_OF[family].match(name)
        if match and int(match.group(1)) >= n_layer:
            raise ModelFileError(f"{path}: weight {name} is for layer {match.group(1)}, but the config says "
                                 f"n_layer={n_layer} (layers 0..{n_layer - 1})")
    expected = gpt_weight_shapes(config) if family == "gpt" else lstm_weight_shapes(config)
    missing = [name for name in expected if name not in tensors]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelFileError(f"{path}: the {family} weights lack {shown} (for the config's n_layer={n_layer})")
    for name, shape in expected.items():
        tensor = tensors[name]
        if tuple(tensor.dims) != shape:
            raise ModelFileError(f"{path}: weight {name} has shape {list(tensor.dims)}, but the config says "
                                 f"{list(shape)}")
        if tensor.data_type != TensorProto.FLOAT:
            raise ModelFileError(f"{path}: weight {name} is {dtype_name(tensor.data_type)}, expected float32")
