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

from .errors import ModelFileError

FORMAT_VERSION = 1
IMAGE_FAMILIES = ("gan", "dcgan", "vae")
FAMILIES = IMAGE_FAMILIES + ("classifier",)
IMAGE_CONFIG_KEYS = ("latent_dim", "channels", "height", "width")


@dataclass
class Artifact:
    path: Path
    model: onnx.ModelProto
    family: str
    config: dict
    provenance: dict = field(default_factory=dict)
    description: str = ""

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
    family = meta.get("aigc.family")
    if family is None:
        raise ModelFileError(f"{path}: not an aigc model (no 'aigc.family' metadata)")
    if family not in FAMILIES:
        raise ModelFileError(f"{path}: unknown model family '{family}' (known: {', '.join(FAMILIES)})")
    if family not in families:
        raise ModelFileError(f"{path}: is a '{family}' model; expected one of: {', '.join(families)}")
    _check_format_version(path, meta.get("aigc.format_version"))
    config = _json_metadata(path, meta, "aigc.config", required=True)
    artifact = Artifact(path, model, family, config,
                        provenance=_json_metadata(path, meta, "aigc.provenance", required=False) or {},
                        description=meta.get("aigc.description", ""))
    if family in IMAGE_FAMILIES:
        _check_image_graph(artifact)
    return artifact


def _check_format_version(path: Path, version: str | None) -> None:
    if version is None:
        raise ModelFileError(f"{path}: no 'aigc.format_version' metadata")
    try:
        number = int(version)
    except ValueError:
        raise ModelFileError(f"{path}: 'aigc.format_version' is not an integer: {version!r}") from None
    if number > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written in format version {number}, newer than this aigc-engine "
                             f"reads ({FORMAT_VERSION}): upgrade aigc-engine")
    if number < 1:
        raise ModelFileError(f"{path}: invalid 'aigc.format_version' {number}")


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


def _dims(value_info: onnx.ValueInfoProto) -> list:
    """Static sizes as ints, symbolic ones as their names (or None)."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _check_image_graph(artifact: Artifact) -> None:
    """z (N, latent_dim) → images (N, C, H, W), with weights that fit those sizes."""
    path, config = artifact.path, artifact.config
    for key in IMAGE_CONFIG_KEYS:
        if not isinstance(config.get(key), int) or config[key] <= 0:
            raise ModelFileError(f"{path}: 'aigc.config' needs a positive integer '{key}', got {config.get(key)!r}")
    graph = artifact.model.graph
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name: o for o in graph.output}
    if "z" not in inputs or "images" not in outputs:
        raise ModelFileError(f"{path}: an image model needs input 'z' and output 'images', has inputs "
                             f"{sorted(inputs)} and outputs {sorted(outputs)}")
    z_dims = _dims(inputs["z"])
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
    image_dims = _dims(next(o for o in inferred.graph.output if o.name == "images"))
    expected = [config["channels"], config["height"], config["width"]]
    if len(image_dims) != 4 or image_dims[1:] != expected:
        raise ModelFileError(f"{path}: output 'images' has shape {image_dims}, but the config says "
                             f"(N, {', '.join(map(str, expected))})")
