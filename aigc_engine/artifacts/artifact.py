"""Reading and validating a model file: one ONNX file with `aigc.*` metadata.

A file is accepted only if it parses as ONNX, names a known family, has a format
version this runtime reads, a JSON config, and a graph whose inputs, outputs and
weights agree with that config. Every rejection names the file and the problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from ..errors import ModelFileError, shown
from .schema import (
    FAMILIES,
    GPT_INPUTS,
    IMAGE_CONFIG_KEYS,
    IMAGE_FAMILIES,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    LOGITS,
    LSTM_INPUTS,
    LSTM_OUTPUTS,
    META_CHAT_TEMPLATE,
    META_CONFIG,
    META_DESCRIPTION,
    META_FAMILY,
    META_FORMAT_VERSION,
    META_PROVENANCE,
    META_TOKENIZER,
    NEWEST_FORMAT_VERSION,
    TEXT_CONFIG_KEYS,
    TEXT_FAMILIES,
    VAE_ENCODER_INPUT,
    VAE_ENCODER_OUTPUTS,
    gpt_past_names,
    gpt_present_names,
)
from .weights import WEIGHTS_PER_LAYER, check_initializers, check_text_weights

# Largest size a config may give (n_layer, n_embd, vocab_size, ...): far above any real
# model, far below what would overflow the decoder's int64 products. The graph's own
# sizes bound them much tighter; this only stops absurd numbers before any arithmetic.
MAX_CONFIG_SIZE = 1 << 24
DEFAULT_EPSILON = 1e-5  # the native decoder's, when the config has no layer_norm_epsilon
MAX_JSON_DEPTH = 32  # nesting of the JSON metadata: configs are flat, provenance two deep


@dataclass
class Artifact:
    path: Path
    model: onnx.ModelProto
    family: str
    config: dict
    provenance: dict = field(default_factory=dict)
    description: str = ""
    tokenizer_json: str = ""  # text families: the tokenizer, as `tokenizers` JSON
    chat_template: dict | None = None  # text families, optional: the template and its special tokens

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def read_artifact(path: str | Path, families: tuple[str, ...] = FAMILIES) -> Artifact:
    """Load and validate `path`; `families` lists the families the caller can serve."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as error:
        raise ModelFileError(f"{path}: not an ONNX model ({error})") from None
    if not model.graph.node or model.ir_version <= 0:
        raise ModelFileError(f"{path}: not an ONNX model (no graph inside)")
    meta = {prop.key: prop.value for prop in model.metadata_props}
    family = meta.get(META_FAMILY)
    if family is None:
        raise ModelFileError(f"{path}: not an aigc model (no '{META_FAMILY}' metadata)")
    if family not in FAMILIES:
        raise ModelFileError(f"{path}: unknown model family '{family}' (known: {', '.join(FAMILIES)})")
    if family not in families:
        raise ModelFileError(f"{path}: is a '{family}' model; expected one of: {', '.join(families)}")
    _check_format_version(path, meta.get(META_FORMAT_VERSION))
    config = _json_metadata(path, meta, META_CONFIG, required=True)
    artifact = Artifact(path, model, family, config,
                        provenance=_json_metadata(path, meta, META_PROVENANCE, required=False) or {},
                        description=meta.get(META_DESCRIPTION, ""),
                        tokenizer_json=meta.get(META_TOKENIZER, ""),
                        chat_template=_json_metadata(path, meta, META_CHAT_TEMPLATE, required=False))
    check_initializers(path, model.graph)
    if family in IMAGE_FAMILIES:
        _check_image_graph(artifact)
    if family in TEXT_FAMILIES:
        _check_text_model(artifact)
    return artifact


def _check_format_version(path: Path, version: str | None) -> None:
    if version is None:
        raise ModelFileError(f"{path}: no '{META_FORMAT_VERSION}' metadata")
    try:
        number = int(version)
    except ValueError:
        raise ModelFileError(f"{path}: '{META_FORMAT_VERSION}' is not an integer: {version!r}") from None
    if number > NEWEST_FORMAT_VERSION:
        raise ModelFileError(f"{path}: written in format version {number}, newer than this aigc-engine "
                             f"reads ({NEWEST_FORMAT_VERSION}): upgrade aigc-engine")
    if number < 1:
        raise ModelFileError(f"{path}: invalid '{META_FORMAT_VERSION}' {number}")


def _json_metadata(path: Path, meta: dict, key: str, required: bool) -> dict | None:
    if key not in meta:
        if required:
            raise ModelFileError(f"{path}: no '{key}' metadata")
        return None
    try:
        value = json.loads(meta[key])
    except RecursionError:
        raise ModelFileError(f"{path}: '{key}' metadata is nested too deeply "
                             f"(at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as error:  # JSONDecodeError, or an integer of more than 4300 digits
        raise ModelFileError(f"{path}: '{key}' metadata is not valid JSON ({_cut(str(error))})") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: '{key}' metadata must be a JSON object, got {type(value).__name__}")
    _check_depth(path, key, value)
    return value


def _check_depth(path: Path, key: str, value) -> None:
    """Nesting beyond MAX_JSON_DEPTH would hit Python's recursion limit in whatever prints it."""
    level = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [v for item in level for v in (item.values() if isinstance(item, dict) else item)
                 if isinstance(v, (dict, list))]
        if not level:
            return
    raise ModelFileError(f"{path}: '{key}' metadata is nested too deeply (at most {MAX_JSON_DEPTH} levels)")


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value) -> str:
    """A config value for a message: short, whatever came (a 4000-digit number, a deep list)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return shown(value, limit=80)


def _positive_ints(artifact: Artifact, keys) -> None:
    for key in keys:
        value = artifact.config.get(key)
        if (isinstance(value, bool) or not isinstance(value, int)
                or not (0 if key == "eos_token_id" else 1) <= value <= MAX_CONFIG_SIZE):
            kind = "non-negative" if key == "eos_token_id" else "positive"
            got = "nothing (no such key)" if key not in artifact.config else _show(value)
            raise ModelFileError(f"{artifact.path}: '{META_CONFIG}' needs a {kind} integer '{key}' (at most "
                                 f"{MAX_CONFIG_SIZE}), got {got}")


def _dims(value_info: onnx.ValueInfoProto) -> list:
    """Static sizes as ints, symbolic ones as their names (or None)."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def has_vae_encoder(artifact: Artifact) -> bool:
    """Whether the file holds a VAE's encoder path beside its decoder (files exported before
    encoders shipped hold the decoder only)."""
    return any(i.name == VAE_ENCODER_INPUT for i in artifact.model.graph.input)


def _check_image_graph(artifact: Artifact) -> None:
    """z (N, latent_dim) → images (N, C, H, W), with weights that fit those sizes; for a VAE,
    optionally also input_images (M, C, H, W) → mean, log_variance (M, latent_dim)."""
    path, config = artifact.path, artifact.config
    _positive_ints(artifact, IMAGE_CONFIG_KEYS)
    graph = artifact.model.graph
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name: o for o in graph.output}
    if IMAGE_INPUT not in inputs or IMAGE_OUTPUT not in outputs:
        raise ModelFileError(f"{path}: an image model needs input '{IMAGE_INPUT}' and output '{IMAGE_OUTPUT}', has inputs "
                             f"{sorted(inputs)} and outputs {sorted(outputs)}")
    z_dims = _dims(inputs[IMAGE_INPUT])
    if len(z_dims) != 2 or z_dims[1] != config["latent_dim"]:
        raise ModelFileError(f"{path}: input 'z' has shape {z_dims}, but the config says latent_dim="
                             f"{config['latent_dim']}")
    encoder = has_vae_encoder(artifact)
    if encoder and artifact.family != "vae":
        raise ModelFileError(f"{path}: input '{VAE_ENCODER_INPUT}' (an encoder path) in a '{artifact.family}' model; "
                             "only a vae has an encoder")
    image_shape = [config["channels"], config["height"], config["width"]]
    encoder_dims = _dims(inputs[VAE_ENCODER_INPUT]) if encoder else None
    if encoder and (len(encoder_dims) != 4 or encoder_dims[1:] != image_shape):
        raise ModelFileError(f"{path}: input '{VAE_ENCODER_INPUT}' has shape {encoder_dims}, but the config says "
                             f"(N, {', '.join(map(str, image_shape))})")
    try:
        # Strict inference propagates z's shape through every weight: a weight whose
        # shape contradicts the config fails here rather than at the first sample.
        inferred = onnx.shape_inference.infer_shapes(artifact.model, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"{path}: weights do not fit the graph's shapes ({first_line})") from None
    shapes = {o.name: _dims(o) for o in inferred.graph.output}
    image_dims = shapes[IMAGE_OUTPUT]
    if len(image_dims) != 4 or image_dims[1:] != image_shape:
        raise ModelFileError(f"{path}: output 'images' has shape {image_dims}, but the config says "
                             f"(N, {', '.join(map(str, image_shape))})")
    for name in VAE_ENCODER_OUTPUTS if encoder else ():
        if name not in shapes:
            raise ModelFileError(f"{path}: a vae with input '{VAE_ENCODER_INPUT}' needs outputs "
                                 f"{', '.join(VAE_ENCODER_OUTPUTS)}; it lacks '{name}'")
        if shapes[name] != [encoder_dims[0], config["latent_dim"]]:
            raise ModelFileError(f"{path}: output '{name}' has shape {shapes[name]}, but the config says "
                                 f"({encoder_dims[0]}, {config['latent_dim']})")


def _check_text_model(artifact: Artifact) -> None:
    """The tokenizer is there; sizes, inputs, outputs and weights agree with the config."""
    path, config, family = artifact.path, artifact.config, artifact.family
    _positive_ints(artifact, TEXT_CONFIG_KEYS[family])
    if config["eos_token_id"] >= config["vocab_size"]:
        raise ModelFileError(f"{path}: eos_token_id {config['eos_token_id']} is outside the vocabulary "
                             f"(vocab_size {config['vocab_size']})")
    if family == "gpt":
        if config["n_embd"] % config["n_head"]:
            raise ModelFileError(f"{path}: n_embd {config['n_embd']} is not divisible by n_head {config['n_head']}")
        _check_epsilon(artifact)
    if not artifact.tokenizer_json:
        raise ModelFileError(f"{path}: a {family} model needs its tokenizer in the '{META_TOKENIZER}' metadata")
    graph = artifact.model.graph
    n_layer = config["n_layer"]
    # Bound n_layer by what the graph holds before building any list of per-layer names.
    most = len(graph.initializer) // WEIGHTS_PER_LAYER[family]
    if n_layer > most:
        raise ModelFileError(f"{path}: the config says n_layer={n_layer}, but the graph has {len(graph.initializer)} "
                             f"weights, enough for at most {most} layers")
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name for o in graph.output}
    if family == "gpt":
        need_in = set(GPT_INPUTS) | set(gpt_past_names(n_layer))
        need_out = {LOGITS} | set(gpt_present_names(n_layer))
        extra = sorted(name for name in inputs if name.startswith("past.") and name not in need_in)
        if extra:
            raise ModelFileError(f"{path}: the gpt graph has input {extra[0]}, beyond the config's n_layer={n_layer}")
    else:
        need_in, need_out = set(LSTM_INPUTS), set(LSTM_OUTPUTS)
    missing = sorted(need_in - set(inputs)) + sorted(need_out - outputs)
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ModelFileError(f"{path}: the {family} graph lacks {shown} (for n_layer={n_layer})")
    state = inputs[gpt_past_names(1)[0] if family == "gpt" else LSTM_INPUTS[1]]
    dims = _dims(state)
    if family == "gpt":  # (batch, n_head, past, head_dim)
        expected = {1: ("n_head", config["n_head"]), 3: ("n_embd / n_head", config["n_embd"] // config["n_head"])}
    else:                # (n_layer, batch, hidden_size)
        expected = {0: ("n_layer", n_layer), 2: ("hidden_size", config["hidden_size"])}
    rank = 4 if family == "gpt" else 3
    if len(dims) != rank:
        raise ModelFileError(f"{path}: input {state.name} has shape {dims}, expected {rank} axes")
    for axis, (what, size) in expected.items():
        if isinstance(dims[axis], int) and dims[axis] != size:
            raise ModelFileError(f"{path}: input {state.name} has shape {dims}: axis {axis} is {dims[axis]}, "
                                 f"but the config says {what} = {size}")
    check_text_weights(path, family, config, graph)
    _check_graph_attributes(artifact)


def _check_epsilon(artifact: Artifact) -> None:
    """layer_norm_epsilon (optional; the decoder's default 1e-5): a number in (0, 1]."""
    value = artifact.config.get("layer_norm_epsilon", DEFAULT_EPSILON)
    # Compared before any conversion: float(10**400) would raise, and NaN fails every test.
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1
            or not np.float32(value) > 0):
        raise ModelFileError(f"{artifact.path}: '{META_CONFIG}' needs a number 'layer_norm_epsilon' in (0, 1], "
                             f"got {_show(value)}")


def _check_graph_attributes(artifact: Artifact) -> None:
    """The sizes the graph's own operators carry: the LSTM layers, the layer norms' epsilon
    (which the native decoder takes from the config instead)."""
    path, config = artifact.path, artifact.config
    nodes = artifact.model.graph.node
    if artifact.family == "lstm":
        layers = [n for n in nodes if n.op_type == "LSTM"]
        if len(layers) != config["n_layer"]:
            raise ModelFileError(f"{path}: the graph has {len(layers)} LSTM operators, but the config says "
                                 f"n_layer={config['n_layer']}")
        for node in layers:
            hidden = next((a.i for a in node.attribute if a.name == "hidden_size"), None)
            if hidden != config["hidden_size"]:
                raise ModelFileError(f"{path}: LSTM operator {node.name or node.output[0]} has hidden_size {hidden}, "
                                     f"but the config says {config['hidden_size']}")
        return
    epsilon = np.float32(config.get("layer_norm_epsilon", DEFAULT_EPSILON))
    for node in nodes:
        if node.op_type == "LayerNormalization":
            graph_epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), DEFAULT_EPSILON)
            if not math.isclose(np.float32(graph_epsilon), epsilon, rel_tol=1e-6):
                raise ModelFileError(f"{path}: layer norm {node.name or node.output[0]} has epsilon {graph_epsilon:g}, "
                                     f"but the config says layer_norm_epsilon={float(epsilon):g}")
