# Export a trained model to ONE self-contained ONNX file that the torch-free runtime loads.
# Images: input `z` (N, latent_dim) float32 → output `images` (N, C, H, W) in [-1, 1].
# Classifier: input `images` (N, 1, 28, 28) → outputs `logits` (N, 10), `features` (N, F).
# N is the dynamic axis "batch"; weights are embedded; metadata_props carry aigc.*.
# Nothing is published unless onnx.checker and an onnxruntime-vs-torch comparison pass;
# the text models (text_export.py) go through the same trace, check and publish steps.
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
from torch import nn

from .checkpoint import load_checkpoint
from .fileio import atomic_write
from ..images.models import IMAGE_FAMILIES, build_model
from ..text.models import TEXT_FAMILIES
from ..images.quality_probe import measure_quality

FORMAT_VERSION = "1"
OPSET = 18
TOLERANCE = 1e-4  # max |onnxruntime − torch| allowed; measured ≈ 3e-7 on these models
VERIFY_BATCHES = (1, 7)
_TITLES = {"gan": "MLP GAN", "dcgan": "DCGAN", "vae": "Convolutional VAE decoder"}
_DATASETS = {"mnist": "MNIST 5k", "digits": "sklearn digits"}


class ExportVerificationError(RuntimeError):
    """The exported graph failed onnx.checker or disagreed with the torch model."""


def export_image_model(
    generator_module: nn.Module, family: str, config: dict, provenance: dict, out_path: str | os.PathLike
) -> Path:
    """Export a generator (a VAE's decoder; put in eval mode) as `z` → `images`; returns the path.

    provenance: dataset, steps, seed, batch_size, final_losses (and lr); quality defaults
    to None, torch_version and exported_at are stamped here.
    """
    if family not in IMAGE_FAMILIES:
        raise ValueError(f"family: expected one of {', '.join(IMAGE_FAMILIES)}, got {family!r}")
    missing = {"latent_dim", "channels", "height", "width"} - set(config)
    if missing:
        raise ValueError(f"config: missing {sorted(missing)}")
    provenance = stamp({"quality": None, **provenance})
    metadata = metadata_props(family, config, provenance, describe(family, config, provenance))
    inputs = {"z": (config["latent_dim"],)}
    return _export_verified(generator_module, inputs, ("images",), metadata, out_path, _normal)


def export_classifier(classifier: nn.Module, config: dict, provenance: dict, out_path: str | os.PathLike) -> Path:
    """Export the digit classifier as `images` → (`logits`, `features`); returns the path written."""
    description = (f"digit classifier, {config['channels']}×{config['height']}×{config['width']} images → "
                   f"{config['num_classes']} logits + {config['feature_dim']}-d features")
    metadata = metadata_props("classifier", config, stamp(provenance), description)
    inputs = {"images": (config["channels"], config["height"], config["width"])}
    return _export_verified(classifier, inputs, ("logits", "features"), metadata, out_path, _uniform)


def export_checkpoint(
    checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, *, quality_n: int = 1000
) -> dict:
    """Re-export a model from a training checkpoint (a file, or the folder holding one).

    When quality_n > 0 and the runtime's quality measure is available, the exported file
    is scored on quality_n samples and the result lands in provenance["quality"].
    Returns the provenance written into the file.
    """
    state = load_checkpoint(checkpoint_path)
    if state["family"] in TEXT_FAMILIES:  # imported late: text_train builds on this module
        from ..text.train import export_text_checkpoint

        out = export_text_checkpoint(checkpoint_path, out_path)
        return json.loads(_read_metadata(onnx.load(out))["aigc.provenance"])
    model = build_model(state["family"], state["config"])
    model.load_state_dict(state["model"])
    module = model.export_module.eval()
    provenance = {"dataset": state["dataset"], "steps": state["step"], "seed": state["seed"],
                  "batch_size": state["batch_size"], "lr": state["lr"],
                  "final_losses": {k: round(v, 4) for k, v in state["losses"].items()}}
    out = export_image_model(module, state["family"], model.config, provenance, out_path)
    quality = measure_quality(out, n=quality_n) if quality_n > 0 else None
    if quality is not None:
        _set_quality(out, quality)
    return json.loads(_read_metadata(onnx.load(out))["aigc.provenance"])


def describe(family: str, config: dict, provenance: dict) -> str:
    """One human line, e.g. 'MLP GAN, 100-d latent → 1×28×28 images, trained 6000 steps on MNIST 5k'."""
    dataset = str(provenance.get("dataset", "unknown data"))
    dataset = _DATASETS.get(dataset, Path(dataset).name or dataset)
    return (f"{_TITLES[family]}, {config['latent_dim']}-d latent → {config['channels']}×{config['height']}×"
            f"{config['width']} images, trained {provenance.get('steps', '?')} steps on {dataset}")


def stamp(provenance: dict) -> dict:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**provenance, "torch_version": torch.__version__, "exported_at": now}


def metadata_props(family: str, config: dict, provenance: dict, description: str) -> dict:
    return {"aigc.family": family, "aigc.format_version": FORMAT_VERSION, "aigc.config": json.dumps(config),
            "aigc.provenance": json.dumps(provenance), "aigc.description": description}


def _normal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.standard_normal(shape)


def _uniform(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, shape)


def _export_verified(module, inputs: dict, output_names, metadata: dict, out_path, sample) -> Path:
    # inputs: name → per-example shape (batch axis excluded); sample(rng, shape) → array.
    # The torch.export-based exporter (torch's default since 2.9; the TorchScript one is
    # deprecated) folds eval-mode BatchNorm into the Gemm/ConvTranspose weights and keeps
    # C, H, W static in the output shape. Example batch 2: torch.export specialises size 1.
    module = module.eval()
    example = tuple(torch.zeros(2, *shape) for shape in inputs.values())
    batch = torch.export.Dim("batch")
    proto = trace_to_onnx(module, example, list(inputs), list(output_names),
                          tuple({0: batch} for _ in inputs))
    blob = checked_blob(proto, metadata, out_path)
    rng = np.random.default_rng(0)
    for n in VERIFY_BATCHES:
        feeds = {name: sample(rng, (n, *shape)).astype(np.float32) for name, shape in inputs.items()}
        with torch.no_grad():
            expected = module(*(torch.from_numpy(a) for a in feeds.values()))
        expected = expected if isinstance(expected, tuple) else (expected,)
        compare_outputs(output_names, [e.numpy() for e in expected], _run_onnx(blob, feeds), f"batch {n}")
    return atomic_write(out_path, lambda f: f.write(blob))


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


def _session(blob: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


def _run_onnx(blob: bytes, feeds: dict) -> list[np.ndarray]:
    return _session(blob).run(None, feeds)


def _read_metadata(proto: onnx.ModelProto) -> dict:
    return {p.key: p.value for p in proto.metadata_props}


def _set_quality(path: Path, quality: dict) -> None:
    proto = onnx.load(path)
    provenance = json.loads(_read_metadata(proto)["aigc.provenance"])
    provenance["quality"] = quality
    for prop in proto.metadata_props:
        if prop.key == "aigc.provenance":
            prop.value = json.dumps(provenance)
    blob = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(blob))
