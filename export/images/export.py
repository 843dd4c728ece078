# Export an image model to ONE self-contained ONNX file (common/onnx_export.py writes and
# checks it). Generators: input `z` (N, latent_dim) float32 → `images` (N, C, H, W) in
# [-1, 1]; a VAE adds its encoder as a second, independent path of the same graph:
# `input_images` (M, C, H, W) → `mean`, `log_variance` (M, latent_dim). The digit
# classifier: `images` (N, 1, 28, 28) → `logits` (N, 10), `features` (N, F). N is the
# dynamic axis "batch" (M: "encoder_batch"). Published only after onnx.checker and an
# onnxruntime-vs-torch comparison at batches VERIFY_BATCHES.
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from aigc_engine.artifacts.schema import (CLASSIFIER, CLASSIFIER_INPUT, CLASSIFIER_OUTPUTS, IMAGE_CONFIG_KEYS,
                                          IMAGE_FAMILIES, IMAGE_INPUT, IMAGE_OUTPUT, VAE_ENCODER_FORMAT_VERSION,
                                          VAE_ENCODER_INPUT, VAE_ENCODER_OUTPUTS)

from ..common.fileio import atomic_write
from ..common.onnx_export import (checked_blob, compare_outputs, metadata_props, read_provenance, run_onnx,
                                  stamp, trace_to_onnx)
from ..models import build_model
from .quality_probe import stamp_image_quality

VERIFY_BATCHES = (1, 7)
_TITLES = {"gan": "MLP GAN", "dcgan": "DCGAN", "vae": "Convolutional VAE"}
_DATASETS = {"mnist": "MNIST 5k", "digits": "sklearn digits"}


class _Input(NamedTuple):
    name: str
    shape: tuple  # one example's, the batch axis excluded
    sample: Callable[[np.random.Generator, tuple], np.ndarray]  # (rng, shape) → test values
    batch: str  # the name of its dynamic batch axis


class _DecoderAndEncoder(nn.Module):
    """A VAE's file: z → images, and input_images → (mean, log_variance); neither path reads the other."""

    def __init__(self, decoder: nn.Module, encoder: nn.Module):
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder

    def forward(self, z, input_images):
        mean, log_variance = self.encoder(input_images)
        return self.decoder(z), mean, log_variance


def export_image_model(
    generator_module: nn.Module, family: str, config: dict, provenance: dict, out_path: str | os.PathLike,
    *, encoder: nn.Module | None = None,
) -> Path:
    """Export a generator (a VAE's decoder; put in eval mode) as `z` → `images`; returns the path.

    encoder: a VAE's encoder, images → (mean, log_variance), exported as the second path of
    the same graph (`input_images` → `mean`, `log_variance`); the file is then format
    version 2, which readers of version 1 refuse rather than fail to run.
    provenance: dataset, steps, seed, batch_size, final_losses (and lr); quality defaults
    to None, torch_version and exported_at are stamped here.
    """
    if family not in IMAGE_FAMILIES:
        raise ValueError(f"family: expected one of {', '.join(IMAGE_FAMILIES)}, got {family!r}")
    if encoder is not None and family != "vae":
        raise ValueError(f"encoder: only a vae has one, got family {family!r}")
    missing = set(IMAGE_CONFIG_KEYS) - set(config)
    if missing:
        raise ValueError(f"config: missing {sorted(missing)}")
    provenance = stamp({"quality": None, **provenance})
    description = describe(family, config, provenance, encoder is not None)
    inputs = [_Input(IMAGE_INPUT, (config["latent_dim"],), _normal, "batch")]
    if encoder is None:
        metadata = metadata_props(family, config, provenance, description)
        return _export_verified(generator_module, inputs, (IMAGE_OUTPUT,), metadata, out_path)
    metadata = metadata_props(family, config, provenance, description, VAE_ENCODER_FORMAT_VERSION)
    inputs.append(_Input(VAE_ENCODER_INPUT, (config["channels"], config["height"], config["width"]), _uniform,
                         "encoder_batch"))
    return _export_verified(_DecoderAndEncoder(generator_module, encoder), inputs,
                            (IMAGE_OUTPUT, *VAE_ENCODER_OUTPUTS), metadata, out_path)


def export_classifier(classifier: nn.Module, config: dict, provenance: dict, out_path: str | os.PathLike) -> Path:
    """Export the digit classifier as `images` → (`logits`, `features`); returns the path written."""
    description = (f"digit classifier, {config['channels']}×{config['height']}×{config['width']} images → "
                   f"{config['num_classes']} logits + {config['feature_dim']}-d features")
    metadata = metadata_props(CLASSIFIER, config, stamp(provenance), description)
    inputs = [_Input(CLASSIFIER_INPUT, (config["channels"], config["height"], config["width"]), _uniform, "batch")]
    return _export_verified(classifier, inputs, CLASSIFIER_OUTPUTS, metadata, out_path)


def export_trained_image(state: dict, out_path: str | os.PathLike, *, quality_n: int = 1000) -> dict:
    """Export an image model from its training checkpoint `state` (as load_checkpoint gives it).

    When quality_n > 0 and the runtime's quality measure is available, the exported file
    is scored on quality_n samples and the result lands in provenance["quality"].
    Returns the provenance written into the file.
    """
    model = build_model(state["family"], state["config"])
    model.load_state_dict(state["model"])
    if "generator_average" in state:  # a GAN ships its generator's weight average
        model.generator.load_state_dict(state["generator_average"])
        standing_statistics(model.generator, model.config["latent_dim"], seed=state["seed"])
    module = model.export_module.eval()
    encoder = model.export_encoder.eval() if state["family"] == "vae" else None
    config = {**model.config, **({"latent_prior": state["latent_prior"]} if "latent_prior" in state else {})}
    provenance = {"dataset": state["dataset"], "steps": state["step"], "seed": state["seed"],
                  "batch_size": state["batch_size"], "lr": state["lr"],
                  "final_losses": {k: round(v, 4) for k, v in state["losses"].items()}}
    if state.get("lr_schedule") is not None:  # the rate fell linearly over the run's last steps
        provenance["lr_schedule"] = state["lr_schedule"]
    if state["family"] != "vae":  # how the GAN trained: whether D saw augmented batches, what G ships
        provenance.update(augment=state.get("augment", False),
                          generator="weight average" if "generator_average" in state else "last step")
        if "generator_average" in state:  # its decay: runs that differ only in it train alike
            provenance["average_generator"] = state["average_generator"]
    out = export_image_model(module, state["family"], config, provenance, out_path, encoder=encoder)
    stamp_image_quality(out, n=quality_n)
    return read_provenance(out)


@torch.no_grad()
def standing_statistics(generator: nn.Module, latent_dim: int, seed: int, batches: int = 20,
                        batch_size: int = 256) -> None:
    """Measure the running statistics of `generator`'s BatchNorm layers afresh, in place: the
    plain average over `batches` batches of random latents (seeded) in training mode, for
    weights (an average over training steps) that never ran with the statistics they carry."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average, every batch weighted alike
    generator.train()
    rng = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        generator(torch.randn(batch_size, latent_dim, generator=rng))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    generator.eval()


def describe(family: str, config: dict, provenance: dict, encoder: bool = False) -> str:
    """One human line, e.g. 'MLP GAN, 100-d latent → 1×28×28 images, trained 6000 steps on MNIST 5k'."""
    dataset = str(provenance.get("dataset", "unknown data"))
    dataset = _DATASETS.get(dataset, Path(dataset).name or dataset)
    title = _TITLES[family] + (" (encoder and decoder)" if encoder else " decoder" if family == "vae" else "")
    prior = config.get("latent_prior")
    latent = f"{config['latent_dim']}-d latent" + (f" ({len(prior['weights'])}-component mixture prior)" if prior else "")
    return (f"{title}, {latent} → {config['channels']}×{config['height']}×"
            f"{config['width']} images, trained {provenance.get('steps', '?')} steps on {dataset}")


def _normal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.standard_normal(shape)


def _uniform(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, shape)


def _export_verified(module, inputs: list[_Input], output_names, metadata: dict, out_path) -> Path:
    # The torch.export-based exporter (torch's default since 2.9; the TorchScript one is
    # deprecated) folds eval-mode BatchNorm into the Gemm/ConvTranspose weights and keeps
    # C, H, W static in the output shape. Example batch 2: torch.export specialises size 1.
    # Each input has a batch axis of its own; input i is checked at batch n + i, so a
    # graph that tied them together would fail here.
    module = module.eval()
    example = tuple(torch.zeros(2 + i, *item.shape) for i, item in enumerate(inputs))
    proto = trace_to_onnx(module, example, [item.name for item in inputs], list(output_names),
                          tuple({0: torch.export.Dim(item.batch)} for item in inputs))
    blob = checked_blob(proto, metadata, out_path)
    rng = np.random.default_rng(0)
    for n in VERIFY_BATCHES:
        feeds = {item.name: item.sample(rng, (n + i, *item.shape)).astype(np.float32)
                 for i, item in enumerate(inputs)}
        with torch.no_grad():
            expected = module(*(torch.from_numpy(a) for a in feeds.values()))
        expected = expected if isinstance(expected, tuple) else (expected,)
        compare_outputs(output_names, [e.numpy() for e in expected], run_onnx(blob, feeds), f"batch {n}")
    return atomic_write(out_path, lambda f: f.write(blob))
