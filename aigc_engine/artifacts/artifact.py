"""Reading and validating a model file: one ONNX file with `aigc.*` metadata.

A file is accepted only if it parses as ONNX, names a known family, has a format
version this runtime reads, a JSON config, and a graph whose inputs, outputs and
weights agree with that config. Every rejection names the file and the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from ..errors import ModelFileError
from .schema import (
    FAMILIES,
    FORMAT_VERSION,
    GPT_INPUTS,
    IMAGE_CONFIG_KEYS,
    IMAGE_FAMILIES,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    LOGITS,
    LSTM_INPUTS,
    LSTM_OUTPUTS,
    META_CONFIG,
    META_DESCRIPTION,
    META_FAMILY,
    META_FORMAT_VERSION,
    META_PROVENANCE,
    META_TOKENIZER,
    TEXT_CONFIG_KEYS,
    TEXT_FAMILIES,
    gpt_past_names,
    gpt_present_names,
)


@dataclass
class Artifact:
    path: Path
    model: onnx.ModelProto
    family: str
    config: dict
    provenance: dict = field(default_factory=dict)
    description: str = ""
    tokenizer_json: str = ""  # text families: the tokenizer, as `tokenizers` JSON

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
                        tokenizer_json=meta.get(META_TOKENIZER, ""))
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
    if number > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written in format version {number}, newer than this aigc-engine "
                             f"reads ({FORMAT_VERSION}): upgrade aigc-engine")
    if number < 1:
        raise ModelFileError(f"{path}: invalid '{META_FORMAT_VERSION}' {number}")


def _json_metadata(path: Path, meta: dict, key: str, required: bool) -> dict | None:
    if key not in meta:
        if required:
            raise ModelFileError(f"{path}: no '{key}' metadata")
        return None
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: '{key}' metadata is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: '{key}' metadata must be a JSON object")
    return value


def _positive_ints(artifact: Artifact, keys) -> None:
    for key in keys:
        value = artifact.config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "eos_token_id" else 1):
            raise ModelFileError(f"{artifact.path}: '{META_CONFIG}' needs a {'non-negative' if key == 'eos_token_id' else 'positive'} "
                                 f"integer '{key}', got {value!r}")


def _dims(value_info: onnx.ValueInfoProto) -> list:
    """Static sizes as ints, symbolic ones as their names (or None)."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _check_image_graph(artifact: Artifact) -> None:
    """z (N, latent_dim) → images (N, C, H, W), with weights that fit those sizes."""
    path, config = artifact.path, artifact.config
    for key in IMAGE_CONFIG_KEYS:
        if not isinstance(config.get(key), int) or config[key] <= 0:
            raise ModelFileError(f"{path}: '{META_CONFIG}' needs a positive integer '{key}', got {config.get(key)!r}")
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
    try:
        # Strict inference propagates z's shape through every weight: a weight whose
        # shape contradicts the config fails here rather than at the first sample.
        inferred = onnx.shape_inference.infer_shapes(artifact.model, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"{path}: weights do not fit the graph's shapes ({first_line})") from None
    image_dims = _dims(next(o for o in inferred.graph.output if o.name == IMAGE_OUTPUT))
    expected = [config["channels"], config["height"], config["width"]]
    if len(image_dims) != 4 or image_dims[1:] != expected:
        raise ModelFileError(f"{path}: output 'images' has shape {image_dims}, but the config says "
                             f"(N, {', '.join(map(str, expected))})")


def _check_text_model(artifact: Artifact) -> None:
    """The tokenizer is there; inputs, outputs and weights agree with the config."""
    path, config, family = artifact.path, artifact.config, artifact.family
    _positive_ints(artifact, TEXT_CONFIG_KEYS[family])
    if not artifact.tokenizer_json:
        raise ModelFileError(f"{path}: a {family} model needs its tokenizer in the '{META_TOKENIZER}' metadata")
    graph = artifact.model.graph
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name for o in graph.output}
    if family == "gpt":
        if config["n_embd"] % config["n_head"]:
            raise ModelFileError(f"{path}: n_embd {config['n_embd']} is not divisible by n_head {config['n_head']}")
        need_in = set(GPT_INPUTS) | set(gpt_past_names(config["n_layer"]))
        need_out = {LOGITS} | set(gpt_present_names(config["n_layer"]))
    else:
        need_in, need_out = set(LSTM_INPUTS), set(LSTM_OUTPUTS)
    missing = sorted(need_in - set(inputs)) + sorted(need_out - outputs)
    if missing:
        raise ModelFileError(f"{path}: the {family} graph lacks {', '.join(missing)} (for n_layer="
                             f"{config['n_layer']})")
    weights = {t.name: list(t.dims) for t in graph.initializer}
    expected = {"transformer.wte.weight": [config["vocab_size"], config["n_embd"]],
                "transformer.wpe.weight": [config["n_positions"], config["n_embd"]]} if family == "gpt" else {}
    for name, shape in expected.items():
        if name in weights and weights[name] != shape:
            raise ModelFileError(f"{path}: weight {name} has shape {weights[name]}, but the config says {shape}")
    state = inputs[gpt_past_names(1)[0] if family == "gpt" else LSTM_INPUTS[1]]
    last = _dims(state)[-1]
    width = config["n_embd"] // config["n_head"] if family == "gpt" else config["hidden_size"]
    if isinstance(last, int) and last != width:
        raise ModelFileError(f"{path}: input {state.name} has width {last}, but the config says {width}")
