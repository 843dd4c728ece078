"""The graph a careful user hands to onnxruntime's `quantize_dynamic`, made from an exported
GPT (aigc export or `aigc import-hf`: logits = MatMul(ln_f output, Transpose(wte)), the head
tied to the embedding). Two edits: only the last position's logits, (batch, 1, vocab), and
the head as its own (n_embd, vocab) initializer feeding a plain MatMul. Quantized as
exported, the tied head stays float32 (`quantize_dynamic` quantizes a MatMul only when its
weight is an initializer, not a Transpose's output) and runs on every prompt position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LOGITS = "logits"
HEAD = "lm_head.weight"  # (n_embd, vocab)


def producer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    found = [node for node in graph.node if name in node.output]
    if len(found) != 1:
        raise ValueError(f"{name}: expected one node making it, found {len(found)}")
    return found[0]


def last_position_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of model with the two edits above; `logits` keeps its name, and
    logits[:, -1] is what it was."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    head = producer(graph, LOGITS)
    transpose = producer(graph, head.input[1])
    weights = {t.name: t for t in graph.initializer}
    perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
    if head.op_type != "MatMul" or transpose.op_type != "Transpose" or perm != [1, 0] \
            or transpose.input[0] not in weights:
        raise ValueError(f"{LOGITS}: expected MatMul(hidden, Transpose(embedding, perm=[1, 0])), got "
                         f"{head.op_type}(…, {transpose.op_type}{list(transpose.input)})")
    embedding = numpy_helper.to_array(weights[transpose.input[0]])  # (vocab, n_embd)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(embedding.T), HEAD))
    # hidden: (batch, sequence, n_embd) → (batch, 1, n_embd), the last position.
    for name, value in (("last.starts", -1), ("last.ends", np.iinfo(np.int64).max), ("last.axes", 1)):
        graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
    last = "hidden.last_position"
    slice_node = helper.make_node("Slice", [head.input[0], "last.starts", "last.ends", "last.axes"], [last],
                                  name="last_position")
    graph.node.insert(list(graph.node).index(head), slice_node)
    head.input[:] = [last, HEAD]
    if not any(transpose.output[0] in node.input for node in graph.node):
        graph.node.remove(transpose)
    output = next(o for o in graph.output if o.name == LOGITS)
    output.type.tensor_type.shape.dim[1].Clear()
    output.type.tensor_type.shape.dim[1].dim_value = 1
    onnx.checker.check_model(model)
    return model


def quantize_last_position_head(onnx_path: Path, out: Path) -> Path:
    """out: onnx_path edited by last_position_head, then `quantize_dynamic` with int8 weights
    (its defaults otherwise, as a user would call it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = out.with_name(f"{out.stem}.float32.onnx")
    onnx.save(last_position_head(onnx.load(str(onnx_path))), str(float_path))
    try:
        quantize_dynamic(str(float_path), str(out), weight_type=QuantType.QInt8)
    finally:
        float_path.unlink()
    return out
