"""Small aigc image-model files built with onnx.helper (no torch), for runtime tests.

`write_generator` makes z (N, latent) → tanh(z @ W + b) reshaped to (N, C, H, W), with
the metadata of a real export; keyword arguments break it in the ways a loader must catch.
"""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def generator_model(latent_dim=8, shape=(1, 4, 6), seed=0, family="gan", format_version="1",
                    config_overrides=None, weight_rows=None, metadata=None) -> onnx.ModelProto:
    channels, height, width = shape
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.5, (weight_rows or latent_dim, channels * height * width)).astype(np.float32)
    bias = rng.normal(0, 0.1, channels * height * width).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["z", "weight"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["flat"]),
        helper.make_node("Reshape", ["flat", "image_shape"], ["images"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_generator",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent_dim])],
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", channels, height, width])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias"),
                     numpy_helper.from_array(np.array([-1, channels, height, width], np.int64), "image_shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = {"latent_dim": latent_dim, "channels": channels, "height": height, "width": width}
    config.update(config_overrides or {})
    props = {"aigc.family": family, "aigc.format_version": format_version, "aigc.config": json.dumps(config),
             "aigc.provenance": json.dumps({"dataset": "test"}), "aigc.description": "tiny test generator"}
    props.update(metadata or {})
    helper.set_model_props(model, {k: v for k, v in props.items() if v is not None})
    return model


def write_generator(path, **kwargs):
    onnx.save(generator_model(**kwargs), str(path))
    return path


def reference_images(model: onnx.ModelProto, z: np.ndarray) -> np.ndarray:
    """The tiny generator's math in numpy, float32 NCHW."""
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    flat = np.tanh(z @ weights["weight"] + weights["bias"])
    return flat.reshape(weights["image_shape"]).astype(np.float32)
