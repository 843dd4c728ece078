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


def embedded_model(name: str) -> onnx.ModelProto:
    """A fresh in-memory copy of the embedded model `name` (e.g. pycode-gpt)."""
    from aigc_engine.artifacts.registry import MODELS_DIR
    return onnx.load(str(MODELS_DIR / f"{name}.onnx"))


def set_metadata(model: onnx.ModelProto, **values) -> onnx.ModelProto:
    """Replace metadata_props by key (aigc_config="..." sets aigc.config); None removes one."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({key.replace("aigc_", "aigc."): value for key, value in values.items()})
    del model.metadata_props[:]
    helper.set_model_props(model, {k: v for k, v in props.items() if v is not None})
    return model


def set_config(model: onnx.ModelProto, **changes) -> onnx.ModelProto:
    """Change keys of the model's aigc.config; None removes a key."""
    config = json.loads(next(p.value for p in model.metadata_props if p.key == "aigc.config"))
    config.update(changes)
    return set_metadata(model, aigc_config=json.dumps({k: v for k, v in config.items() if v is not None}))


def set_weight(model: onnx.ModelProto, name: str, array: np.ndarray | None) -> onnx.ModelProto:
    """Replace the initializer `name` by `array` (its dtype and shape); None removes it."""
    index = next(i for i, t in enumerate(model.graph.initializer) if t.name == name)
    if array is None:
        del model.graph.initializer[index]
    else:
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, name))
    return model


def weight(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name)).copy()
