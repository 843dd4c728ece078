# Writing and checking ONE self-contained ONNX file that the torch-free runtime loads,
# for every family: trace (torch.export-based exporter, opset OPSET, weights embedded),
# add metadata_props (aigc.*, keys from aigc_engine.artifacts.schema), onnx.checker,
# and compare onnxruntime's outputs with torch's. Nothing is published unless both pass;
# the families' own graphs and checks are in images/export.py and text/export.py.
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir
import onnxruntime as ort
import onnxscript
import torch

from aigc_engine.artifacts.schema import (FORMAT_VERSION, META_CONFIG, META_DESCRIPTION, META_FAMILY,
                                          META_FORMAT_VERSION, META_PROVENANCE)

from .fileio import atomic_write

OPSET = 18
TOLERANCE = 1e-4  # max |onnxruntime − torch| allowed; measured ≈ 3e-7 on these models


class ExportVerificationError(RuntimeError):
    """The exported graph failed onnx.checker or disagreed with the torch model."""


def stamp(provenance: dict) -> dict:
    """provenance with torch_version and exported_at (UTC, to the second) added."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**provenance, "torch_version": torch.__version__, "exported_at": now}


def metadata_props(family: str, config: dict, provenance: dict, description: str,
                   format_version: int = FORMAT_VERSION) -> dict:
    """The aigc.* metadata every file carries (text families add the tokenizer); format_version:
    the oldest whose readers run the file (schema.py)."""
    return {META_FAMILY: family, META_FORMAT_VERSION: str(format_version), META_CONFIG: json.dumps(config),
            META_PROVENANCE: json.dumps(provenance), META_DESCRIPTION: description}


def trace_to_onnx(module, example: tuple, input_names: list, output_names: list, dynamic_shapes,
                  keep_parameter_names: bool = False) -> onnx.ModelProto:
    """torch.onnx.export (dynamo, opset OPSET, weights embedded) → the ModelProto.

    keep_parameter_names: skip the exporter's optimizer, whose initializer deduplication
    merges equal small tensors (zero biases, unit LayerNorm scales of ≤ 1024 elements)
    under one name, and run its other passes here instead, so every parameter survives
    as an initializer named by its torch name — the names a native decoder reads.
    """
    with _quiet_exporter():
        program = torch.onnx.export(
            module, example, dynamo=True, verbose=False, opset_version=OPSET, external_data=False,
            input_names=input_names, output_names=output_names, dynamic_shapes=dynamic_shapes,
            optimize=not keep_parameter_names,
        )
        if not keep_parameter_names:
            return program.model_proto
        model = program.model
        common = onnx_ir.passes.common
        onnx_ir.passes.Sequential(common.InlinePass(), common.RemoveUnusedNodesPass())(model)
        # Nor may constant folding derive new tensors from parameters (a transposed copy of
        # the tied embedding for the head would double the file).
        parameters = {name for name, _ in module.named_parameters()}
        onnxscript.optimizer.fold_constants(model, should_fold=lambda node: False if any(
            value is not None and value.name in parameters for value in node.inputs) else None)
        model = onnxscript.rewriter.rewrite(model)
        onnx_ir.passes.Sequential(
            common.RemoveUnusedNodesPass(), common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
            common.CommonSubexpressionEliminationPass(), common.RemoveUnusedNodesPass(),
        )(model)
        return onnx_ir.serde.serialize_model(model)


def checked_blob(proto: onnx.ModelProto, metadata: dict, out_path) -> bytes:
    """Add metadata_props, run onnx.checker (full), and serialise; nothing is written."""
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportVerificationError(f"exported graph for {out_path} fails onnx.checker: {err}") from err
    return proto.SerializeToString()


def compare_outputs(names, expected: list[np.ndarray], got: list[np.ndarray], where: str) -> None:
    """Raise ExportVerificationError unless each onnxruntime output is within TOLERANCE of torch's."""
    for name, want, have in zip(names, expected, got):
        if have.shape != tuple(want.shape):
            raise ExportVerificationError(
                f"output {name!r} at {where}: onnxruntime shape {have.shape}, torch {tuple(want.shape)}"
            )
        diff = float(np.max(np.abs(have - want))) if want.size else 0.0
        if not diff <= TOLERANCE:
            raise ExportVerificationError(
                f"output {name!r} at {where}: onnxruntime differs from torch by {diff:.3g} "
                f"(max allowed {TOLERANCE:g})"
            )


@contextlib.contextmanager
def _quiet_exporter():
    # torch 2.13's exporter raises a FutureWarning from torch's own pytree code and logs
    # one line per torchvision op it cannot register; neither concerns these models.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def session(blob: bytes) -> ort.InferenceSession:
    """An onnxruntime CPU session on a serialised model."""
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


def run_onnx(blob: bytes, feeds: dict) -> list[np.ndarray]:
    return session(blob).run(None, feeds)


def read_metadata(path: str | os.PathLike) -> dict:
    """metadata_props of the file at `path`, as a dict."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def read_provenance(path: str | os.PathLike) -> dict:
    return json.loads(read_metadata(path)[META_PROVENANCE])


def set_quality(path: Path, quality: dict) -> None:
    """Put `quality` into the provenance of the file at `path`, rewritten atomically."""
    _update_json_metadata(path, META_PROVENANCE, {"quality": quality})


def set_config(path: Path, changes: dict) -> None:
    """Lay `changes` over the config of the file at `path`, rewritten atomically."""
    _update_json_metadata(path, META_CONFIG, changes)


def _update_json_metadata(path: Path, key: str, changes: dict) -> None:
    proto = onnx.load(path)
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = json.dumps({**json.loads(prop.value), **changes})
    blob = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(blob))
