"""The gpt family's ONNX graph built from numpy weights with onnx.helper, without torch:
the same inputs, outputs, initializer names and arithmetic as the graph `aigc train gpt`
exports through torch (export/text/models.py's GPT.forward), opset 18, standard ops only.

input_ids, position_ids (B, T) int64; attention_mask (B, P+T) int64, 1 = attend;
past.{i}.key/value (B, n_head, P, head_dim) → logits (B, T, vocab), present.{i}.key/value
(B, n_head, P+T, head_dim). P = 0 is the prefill. Weights keep GPT-2's names and Conv1D
(in, out) layout; the head is the tied embedding, transposed in the graph (not stored twice).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .schema import GPT_INPUTS, LOGITS, gpt_past_names, gpt_present_names

OPSET = 18  # as export/common/onnx_export.py
IR_VERSION = 8  # the first IR that carries opset 18: the oldest onnxruntime that runs the graph runs the file
_GELU_C = math.sqrt(2.0 / math.pi)  # GPT-2's "gelu_new": 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))


class _Builder:
    """Nodes and constants of one graph; every value is named by the caller."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.constants: dict[str, onnx.TensorProto] = {}

    def op(self, op_type: str, inputs: list[str], output: str | list[str], **attributes) -> str | list[str]:
        outputs = [output] if isinstance(output, str) else output
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attributes))
        return output

    def const(self, name: str, value, dtype) -> str:
        """A constant, made once however many layers ask for it."""
        if name not in self.constants:
            self.constants[name] = numpy_helper.from_array(np.asarray(value, dtype), f"const.{name}")
        return f"const.{name}"


def gpt_model(config: dict, weights: dict[str, np.ndarray], metadata: dict[str, str]) -> onnx.ModelProto:
    """The graph for `config` with `weights` (GPT-2 names, float32) as initializers and `metadata` as
    metadata_props."""
    n_layer, n_head, n_embd, vocab = config["n_layer"], config["n_head"], config["n_embd"], config["vocab_size"]
    head_dim = n_embd // n_head
    input_ids, position_ids, attention_mask = GPT_INPUTS
    pasts, presents = gpt_past_names(n_layer), gpt_present_names(n_layer)
    g = _Builder()
    allowed = _attention_allowed(g, input_ids, attention_mask, pasts[0])
    x = g.op("Add", [g.op("Gather", ["transformer.wte.weight", input_ids], "wte"),
                     g.op("Gather", ["transformer.wpe.weight", position_ids], "wpe")], "embeddings")
    for i in range(n_layer):
        x = _block(g, config, f"transformer.h.{i}.", x, allowed, pasts[2 * i:2 * i + 2], presents[2 * i:2 * i + 2])
    x = _layer_norm(g, config, x, "transformer.ln_f")
    head = g.op("Transpose", ["transformer.wte.weight"], "lm_head", perm=[1, 0])
    g.op("MatMul", [x, head], LOGITS)

    def tensor(name: str, dtype: int, dims: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, dtype, dims)

    inputs = [tensor(input_ids, TensorProto.INT64, ["batch", "sequence"]),
              tensor(position_ids, TensorProto.INT64, ["batch", "sequence"]),
              tensor(attention_mask, TensorProto.INT64, ["batch", "total_sequence"])]
    inputs += [tensor(name, TensorProto.FLOAT, ["batch", n_head, "past_sequence", head_dim]) for name in pasts]
    outputs = [tensor(LOGITS, TensorProto.FLOAT, ["batch", "sequence", vocab])]
    outputs += [tensor(name, TensorProto.FLOAT, ["batch", n_head, "total_sequence", head_dim]) for name in presents]
    graph = helper.make_graph(g.nodes, "gpt", inputs, outputs, list(g.constants.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="aigc-engine")
    helper.set_model_props(model, metadata)
    # Added to the finished model, one tensor at a time: make_graph and make_model would
    # copy every weight twice more (1.2 GB of copies for GPT-2 small).
    for name, array in weights.items():
        tensor = model.graph.initializer.add()
        tensor.name, tensor.data_type = name, TensorProto.FLOAT
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array, "<f4").tobytes()
    return model


def _attention_allowed(g: _Builder, input_ids: str, attention_mask: str, past_key: str) -> str:
    """(B, 1, T, P+T) bool: query t (at absolute position P + t) may see key j ≤ P + t whose mask is 1."""
    zero, one = g.const("zero_i64", 0, np.int64), g.const("one_i64", 1, np.int64)
    new = g.op("Squeeze", [g.op("Shape", [input_ids], "mask.new_1d", start=1, end=2)], "mask.new")
    past = g.op("Squeeze", [g.op("Shape", [past_key], "mask.past_1d", start=2, end=3)], "mask.past")
    total = g.op("Add", [past, new], "mask.total")
    queries = g.op("Add", [g.op("Range", [zero, new, one], "mask.query_offsets"), past], "mask.queries")
    keys = g.op("Range", [zero, total, one], "mask.keys")
    causal = g.op("GreaterOrEqual", [g.op("Unsqueeze", [queries, g.const("axis_1", [1], np.int64)], "mask.q_col"),
                                     g.op("Unsqueeze", [keys, g.const("axis_0", [0], np.int64)], "mask.k_row")],
                  "mask.causal")  # (T, P+T)
    attended = g.op("Not", [g.op("Equal", [attention_mask, zero], "mask.padding")], "mask.attended")
    attended = g.op("Unsqueeze", [attended, g.const("axes_1_2", [1, 2], np.int64)], "mask.attended_4d")
    return g.op("And", [causal, attended], "mask.allowed")


def _layer_norm(g: _Builder, config: dict, x: str, prefix: str) -> str:
    return g.op("LayerNormalization", [x, f"{prefix}.weight", f"{prefix}.bias"], prefix.removeprefix("transformer."),
                axis=-1, epsilon=float(config["layer_norm_epsilon"]))


def _linear(g: _Builder, x: str, prefix: str) -> str:
    # x (B, T, in) @ weight (in, out) + bias (out,): GPT-2's Conv1D
    name = prefix.removeprefix("transformer.")
    return g.op("Add", [g.op("MatMul", [x, f"{prefix}.weight"], f"{name}.matmul"), f"{prefix}.bias"], name)


def _block(g: _Builder, config: dict, p: str, x: str, allowed: str, past: list[str], present: list[str]) -> str:
    n_head, n_embd = config["n_head"], config["n_embd"]
    head_dim = n_embd // n_head
    name = p.removeprefix("transformer.")
    heads_shape = g.const("heads_shape", [0, 0, n_head, head_dim], np.int64)  # 0: keep B, T
    qkv = _linear(g, _layer_norm(g, config, x, p + "ln_1"), p + "attn.c_attn")  # (B, T, 3C)
    q, k, v = g.op("Split", [qkv], [f"{name}attn.q", f"{name}attn.k", f"{name}attn.v"], axis=2, num_outputs=3)
    q, k, v = (g.op("Transpose", [g.op("Reshape", [t, heads_shape], f"{t}_heads")], f"{t}_bhtd", perm=[0, 2, 1, 3])
               for t in (q, k, v))  # (B, H, T, D)
    key = g.op("Concat", [past[0], k], present[0], axis=2)  # (B, H, P+T, D)
    value = g.op("Concat", [past[1], v], present[1], axis=2)
    scores = g.op("MatMul", [q, g.op("Transpose", [key], f"{name}attn.key_t", perm=[0, 1, 3, 2])],
                  f"{name}attn.qk")  # (B, H, T, P+T)
    scores = g.op("Mul", [scores, g.const("scale", 1.0 / math.sqrt(head_dim), np.float32)],
                  f"{name}attn.scores")
    # The float32 minimum, not -inf: a left-padding query sees no key at all, and a row of
    # -inf would make NaNs (as in the torch model).
    scores = g.op("Where", [allowed, scores, g.const("masked", np.finfo(np.float32).min, np.float32)],
                  f"{name}attn.masked")
    y = g.op("MatMul", [g.op("Softmax", [scores], f"{name}attn.probs", axis=-1), value], f"{name}attn.y")
    y = g.op("Reshape", [g.op("Transpose", [y], f"{name}attn.y_bthd", perm=[0, 2, 1, 3]),
                         g.const("merged_shape", [0, 0, n_embd], np.int64)], f"{name}attn.y_merged")
    x = g.op("Add", [x, _linear(g, y, p + "attn.c_proj")], f"{name}attn.residual")
    h = _linear(g, _layer_norm(g, config, x, p + "ln_2"), p + "mlp.c_fc")
    inner = g.op("Add", [h, g.op("Mul", [g.op("Pow", [h, g.const("three", 3.0, np.float32)], f"{name}mlp.cube"),
                                         g.const("gelu_a", 0.044715, np.float32)], f"{name}mlp.cube_a")],
                 f"{name}mlp.inner")
    tanh = g.op("Tanh", [g.op("Mul", [inner, g.const("gelu_c", _GELU_C, np.float32)], f"{name}mlp.scaled")],
                f"{name}mlp.tanh")
    half = g.op("Mul", [g.op("Add", [tanh, g.const("one", 1.0, np.float32)], f"{name}mlp.one_plus"),
                        g.const("half", 0.5, np.float32)], f"{name}mlp.half")
    gelu = g.op("Mul", [h, half], f"{name}mlp.gelu")
    return g.op("Add", [x, _linear(g, gelu, p + "mlp.c_proj")], f"{name}mlp.residual")
