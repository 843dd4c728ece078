# Training loops: the image families (GAN, DCGAN, VAE) on the train part of a data
# source, checkpointed and exported to ONNX, and the digit classifier that scores them.
# Batches are (B, C, H, W) in [-1, 1]; latents (B, latent_dim) standard normal.
# Everything random is seeded (torch.manual_seed, the batch order), so the same
# arguments give the same weights on the same machine and thread count.
from __future__ import annotations

import copy
import functools
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from aigc_engine.artifacts.schema import CLASSIFIER, IMAGE_FAMILIES

from ..common.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from ..common.distributed import (barrier, check_batch_divisible, mean_over_ranks, no_sync, periodic_checkpoint, shard,
                                  world, wrap)
from ..common.fileio import atomic_write
from ..common.training import EMA, set_threads_from_env
from ..models import build_model
from .augment import augment as augment_batch
from .data import batch_indices, load_images, split_heldout
from .export import export_classifier, export_trained_image
from .latent_prior import DEFAULT_PRIOR_COMPONENTS, fit_latent_prior
from .models import IMAGE_DEFAULT_CONFIGS

# Defaults that give recognisable digits on MNIST 5k in 2–4 minutes on 2 CPU cores
# (measured, AIGC_NUM_THREADS=2: gan 144 s, dcgan 188 s, vae 142 s; classifier 46 s on 1).
# Fréchet distance on the (1500-step) digit classifier's features by steps, 1 thread
# (real held-out digits: ≈ 2; the 2-thread defaults above: gan 66, dcgan 129, vae 157):
#   gan    3k 260, 6k 124, 9k 84, 12k 64
#   dcgan  lr 4e-4: 1k 204, 1.5k 156, 2k 118, 2.5k 111; lr 2e-4 at 1k and 2k: 221, 216
#   vae    latent 8: 1.5k 242, 3k 201, 4.5k 183 (latent 16 at 4.5k: 229)
DEFAULT_STEPS = {"gan": 12000, "dcgan": 2000, "vae": 6000, "classifier": 3000}
DEFAULT_LR = {"gan": 2e-4, "dcgan": 4e-4, "vae": 1e-3, "classifier": 1e-3}


GANS = ("gan", "dcgan")
# Two options for a GAN, both off by default: at the default steps neither lowered the
# Fréchet distance in a measured DCGAN run (1,000 digits, 1 thread; live generator 190 at
# 2k steps; with augmentation 269; the 0.999 average of either about 20-30 % above its live
# generator at 2k steps, as it still remembers the first thousand steps). Both are what the
# literature uses for long runs on few images; see README's "Embedded models" for the runs.
# average_generator: ship the exponential moving average of the generator's weights (Karras
# et al.; bias-corrected, see average_decay), not the last step's, with BatchNorm statistics
# measured afresh for them at export (standing statistics: the live generator's running ones
# belong to other weights).
# augment: D sees real and generated batches through the same random translation and
# cutout (augment.py, "DiffAugment").


def train_image_model(
    family: str,
    data: str = "mnist",
    steps: int | None = None,
    out: str | os.PathLike = "model.onnx",
    *,
    batch_size: int = 64,
    lr: float | None = None,
    seed: int = 0,
    image_size: int = 28,
    channels: int = 1,
    latent_dim: int | None = None,
    config: dict | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    quality_n: int = 1000,
    augment: bool = False,
    average_generator: float | None = None,
    lr_decay_from: int | None = None,
    prior_components: int | None = None,
) -> dict:
    """Train `family` ("gan", "dcgan" or "vae") on `data` and export it to `out`.

    data: "mnist", "digits" or a folder of images; only the train part of
    split_heldout is used. steps and lr default to DEFAULT_STEPS / DEFAULT_LR for the
    family; latent_dim to the family's default (100 for the GANs, 8 for the VAE);
    config: other model hyper-parameters over DEFAULT_CONFIGS[family].
    GANs: Adam(lr, betas=config["adam_betas"], default (0.5, 0.999)) for each of generator and
    discriminator, one step of each per training step, the loss config["loss"]. VAE: Adam(lr).
    Checkpoints go to checkpoint_dir/checkpoint.pt, by default the folder next to
    `out` named after it with the suffix .ckpt (model.onnx → model.ckpt/), every
    checkpoint_every steps and at the end. resume=True continues from that checkpoint
    when it exists (same family, config, data, seed, batch size and lr, else
    ValueError) up to `steps` in all; without one it starts afresh.
    quality_n > 0 scores the exported model (quality_probe) into provenance["quality"].
    augment: a GAN's discriminator sees real and generated batches through the same random
    translation and cutout (augment.py). average_generator: a decay in (0, 1); a GAN then
    ships the exponential moving average of its generator's weights (see GANS above).
    lr_decay_from: the (0-based) step from which every learning rate falls linearly, to 0
    after the last step (lr_at); None keeps it constant. A run may resume from a checkpoint
    of another schedule (or none) that had not started to decay yet.
    prior_components: a VAE's samples draw from a Gaussian mixture of this many components
    fitted to its training images' posterior means at the end (latent_prior.py; default
    DEFAULT_PRIOR_COMPONENTS; 0: standard normal).
    Returns a summary: family, steps, final_losses, out, checkpoint, seconds, quality,
    resumed_from (the step resumed at, or None).
    In a torch.distributed process group (common/launch.py) each rank trains on its rows of
    every batch (batch_size / ranks) and rank 0 alone writes; the other ranks return None.
    """
    if family not in IMAGE_FAMILIES:
        raise ValueError(f"unknown image family {family!r}: expected one of {', '.join(IMAGE_FAMILIES)}")
    check_batch_divisible(batch_size, world().size)
    set_threads_from_env()
    steps = DEFAULT_STEPS[family] if steps is None else steps
    lr = DEFAULT_LR[family] if lr is None else lr
    train, _ = split_heldout(load_images(data, image_size, channels))
    if len(train) < 2:
        raise ValueError(f"data {data!r}: need at least 2 training images, got {len(train)}")
    config = {**(config or {}), "channels": channels, "height": image_size, "width": image_size}
    if latent_dim is not None:
        config["latent_dim"] = latent_dim
    torch.manual_seed(seed)
    model = build_model(family, config)
    optimizers = _image_optimizers(model, family, lr)
    out = Path(out)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out.with_suffix(".ckpt")
    if family not in GANS and (augment or average_generator is not None):
        raise ValueError(f"augment, average_generator: options of the GANs ({', '.join(GANS)}), not of a {family}")
    if family != "vae" and prior_components is not None:
        raise ValueError(f"prior_components: an option of the vae, not of a {family}")
    prior_components = DEFAULT_PRIOR_COMPONENTS if prior_components is None else prior_components
    if isinstance(prior_components, bool) or not isinstance(prior_components, int) or prior_components < 0:
        raise ValueError(f"prior_components: expected an integer >= 0 (0: standard-normal latents), "
                         f"got {prior_components!r}")
    if average_generator is not None and not 0 < average_generator < 1:
        raise ValueError(f"average_generator: expected a decay in (0, 1) such as 0.999, got {average_generator!r}")
    schedule = _lr_schedule(lr_decay_from, steps)
    run = {"family": family, "config": model.config, "dataset": train.name, "seed": seed,
           "batch_size": batch_size, "lr": lr, "augment": augment, "average_generator": average_generator}

    averaged = copy.deepcopy(model.generator).requires_grad_(False) if average_generator is not None else None
    found = find_checkpoint(checkpoint_dir) if resume else None
    start, ema = _restore(found, run, schedule, model, optimizers, averaged) if found is not None else (0, {})
    resumed_from = start if found is not None else None

    def checkpoint(step: int, latent_prior: dict | None = None) -> Path:
        return save_checkpoint({
            **run, "model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "step": step, "losses": ema, "rng": torch.get_rng_state(), "lr_schedule": schedule,
            **({"generator_average": averaged.state_dict()} if averaged is not None else {}),
            **({"latent_prior": latent_prior} if latent_prior is not None else {}),
        }, checkpoint_dir)

    images = torch.from_numpy(train.images)
    nets = _training_nets(model, family)
    train_step = _vae_step if family == "vae" else functools.partial(_gan_step, augment=augment)
    began = time.perf_counter()
    model.train()
    main = world().is_main
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {family}",
               disable=not (progress and main))
    for step in bar:
        rate = lr_at(step, lr, schedule)
        for optimizer in optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = rate
        losses = train_step(model, nets, optimizers, images[batch_indices(len(images), batch_size, seed, step)])
        if averaged is not None:
            _update_average(averaged, model.generator, average_decay(average_generator, step))
        ema = {k: v if k not in ema else EMA * ema[k] + (1 - EMA) * v for k, v in losses.items()}
        if step % 10 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()}, refresh=False)
        periodic_checkpoint(step + 1, checkpoint_every, steps, checkpoint)
    bar.close()
    seconds = time.perf_counter() - began
    barrier()
    if not main:
        return None
    # the final checkpoint alone carries a VAE's fitted prior: export ships it (an earlier one
    # exports with standard-normal latents)
    fit_prior = family == "vae" and prior_components > 0
    final = checkpoint(max(start, steps), fit_latent_prior(model, images, prior_components, seed) if fit_prior else None)
    provenance = export_trained_image(load_checkpoint(final), out, quality_n=quality_n)
    return {"family": family, "steps": provenance["steps"], "final_losses": provenance["final_losses"],
            "out": str(out), "checkpoint": str(final), "seconds": round(seconds, 2),
            "quality": provenance["quality"], "resumed_from": resumed_from}


def _restore(found: Path, run: dict, schedule: dict | None, model, optimizers: dict,
             averaged) -> tuple[int, dict]:
    # Load model, optimizers, the generator's average and RNG from the checkpoint;
    # returns (step, loss averages).
    state = load_checkpoint(found)
    if not _schedules_agree(state.get("lr_schedule"), schedule, state["step"]):
        raise ValueError(f"cannot resume from {found}: it trained {state['step']} steps with the learning "
                         f"rate schedule {state.get('lr_schedule')}, which differs from this run's {schedule} "
                         f"before that step")
    # augment, average_generator and some config keys are newer than some checkpoints: absent,
    # they had their defaults
    defaults = {"augment": False, "average_generator": None}
    state["config"] = {**IMAGE_DEFAULT_CONFIGS[run["family"]], **state["config"]}
    mismatched = sorted(key for key, value in run.items() if state.get(key, defaults.get(key)) != value)
    if mismatched:
        raise ValueError(f"cannot resume from {found}: {', '.join(mismatched)} differ from this run's")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:  # a checkpoint of an older layout of the same model
        raise ValueError(f"cannot resume from {found}: its weights do not fit this model "
                         f"({str(error).splitlines()[0]})") from None
    if averaged is not None:
        averaged.load_state_dict(state["generator_average"])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    torch.set_rng_state(state["rng"])
    return state["step"], state["losses"]


def _lr_schedule(decay_from: int | None, steps: int) -> dict | None:
    if decay_from is None:
        return None
    if isinstance(decay_from, bool) or not isinstance(decay_from, int) or not 0 <= decay_from < steps:
        raise ValueError(f"lr_decay_from: expected a step in [0, steps = {steps}), got {decay_from!r}")
    return {"decay_from": decay_from, "steps": steps}


def lr_at(step: int, lr: float, schedule: dict | None) -> float:
    """The learning rate at (0-based) step: lr until schedule["decay_from"], then falling
    linearly to lr / n at the last step (n = the decaying steps), 0 after it; constant
    without a schedule. Decaying the rate at the end of a GAN run lets the generator settle
    where constant steps keep it circling (measured in README's "Embedded models")."""
    if schedule is None or step < schedule["decay_from"]:
        return lr
    return lr * (schedule["steps"] - step) / (schedule["steps"] - schedule["decay_from"])


def _schedules_agree(old: dict | None, new: dict | None, steps_done: int) -> bool:
    # The checkpoint's steps saw what this run's schedule would have given them: the same
    # schedule, or a constant rate on both sides up to steps_done.
    def constant_until(schedule):
        return float("inf") if schedule is None else schedule["decay_from"]
    return old == new or steps_done <= min(constant_until(old), constant_until(new))


def average_decay(decay: float, step: int) -> float:
    """The average's decay at (0-based) step: (d − d^t) / (1 − d^t), t = step + 1. Started from
    the random initial weights with the plain decay d, the average would keep d^t of them
    (0.9999 over 36,000 steps: 2.7 %); this is the bias-corrected average instead (as Adam
    corrects its moments): step s's weights count d^(t − s) / Σ, the initial ones not at all
    (the first step replaces them), and the decay tends to d."""
    t = step + 1
    return (decay - decay**t) / (1.0 - decay**t)


@torch.no_grad()
def _update_average(averaged: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    # averaged ← decay · averaged + (1 − decay) · live, parameter by parameter; BatchNorm's
    # buffers are not averaged (export measures them afresh: standing_statistics)
    for mine, theirs in zip(averaged.parameters(), live.parameters()):
        mine.lerp_(theirs, 1.0 - decay)


def _image_optimizers(model, family: str, lr: float) -> dict:
    if family == "vae":
        return {"vae": torch.optim.Adam(model.parameters(), lr=lr)}
    betas = tuple(float(b) for b in model.config["adam_betas"])
    return {"g": torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas),
            "d": torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas)}


def _training_nets(model, family: str) -> dict:
    # What the steps call: the networks, wrapped for DDP when there are several ranks.
    if family == "vae":
        return {"loss": wrap(model, "loss")}
    return {"g": wrap(model.generator), "d": wrap(model.discriminator)}


def _gan_step(model, nets: dict, optimizers: dict, batch: torch.Tensor, augment: bool) -> dict:
    # batch: (B, C, H, W), the global batch; this rank trains on its rows, and on its rows of
    # the B latents every rank draws alike. Losses by config["loss"]: "bce", D's BCE on real
    # (target real_label, one-sided smoothing) + fake (0) and G's non-saturating BCE of D(G(z))
    # against 1; "hinge", D's mean relu(1 − D(real)) + relu(1 + D(fake)) and G's −D(G(z)).
    # With augment, each of D's three inputs goes through augmentation drawn afresh.
    real = shard(batch)
    seen = functools.partial(augment_batch, global_batch=len(batch)) if augment else lambda images: images
    fake = nets["g"](shard(torch.randn(len(batch), model.config["latent_dim"])))
    d_loss = _discriminator_loss(model.config, nets["d"](seen(real)), nets["d"](seen(fake.detach())))
    optimizers["d"].zero_grad(set_to_none=True)
    d_loss.backward()
    optimizers["d"].step()
    with no_sync(nets["d"]):  # D's gradients from this pass are discarded before its next step
        g_loss = _generator_loss(model.config, nets["d"](seen(fake)))
        optimizers["g"].zero_grad(set_to_none=True)
        g_loss.backward()
    optimizers["g"].step()
    return mean_over_ranks({"d_loss": d_loss, "g_loss": g_loss})


def _discriminator_loss(config: dict, on_real: torch.Tensor, on_fake: torch.Tensor) -> torch.Tensor:
    # on_real, on_fake: D's logits (n,) for this rank's real and generated images
    if config["loss"] == "hinge":
        return F.relu(1.0 - on_real).mean() + F.relu(1.0 + on_fake).mean()
    real_target = torch.full_like(on_real, float(config["real_label"]))
    return (F.binary_cross_entropy_with_logits(on_real, real_target)
            + F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake)))


def _generator_loss(config: dict, on_fake: torch.Tensor) -> torch.Tensor:
    if config["loss"] == "hinge":
        return -on_fake.mean()
    return F.binary_cross_entropy_with_logits(on_fake, torch.ones_like(on_fake))


def _vae_step(model, nets: dict, optimizers: dict, batch: torch.Tensor) -> dict:
    # batch: (B, C, H, W), the global batch; this rank's rows; the noise of the
    # reparameterisation is drawn per rank for its rows
    total, recon, kl = nets["loss"](shard(batch))
    optimizers["vae"].zero_grad(set_to_none=True)
    total.backward()
    optimizers["vae"].step()
    return mean_over_ranks({"recon": recon, "kl": kl})


def train_classifier(
    out_dir: str | os.PathLike, steps: int | None = None, seed: int = 0, progress: bool = True,
    *, batch_size: int = 64, lr: float | None = None,
) -> dict:
    """Train the digit classifier on the MNIST train split; write its ONNX and the reference.

    out_dir/digits-classifier.onnx: `images` (N, 1, 28, 28) in [-1, 1] → `logits` (N, 10),
    `features` (N, F); aigc.config carries feature_dim and heldout_accuracy.
    out_dir/digits-reference.npz: mu (F,) and sigma (F, F) float64, the mean and
    covariance of the features of all 5000 real MNIST digits; train_mu, train_sigma the same
    over the training split alone (disjoint from the held-out digits); heldout_features (M, F),
    heldout_logits (M, 10) float32, heldout_labels (M,) int64 and heldout_images (M, 28, 28, 1)
    uint8 (the pixels themselves: a VAE's reconstruction is measured on them) for the M
    held-out digits. Compressed (np.savez_compressed).
    Training: Adam, cross-entropy, each batch randomly rotated (±10°), scaled (±10%) and
    shifted (±2 px) so that the features do not hinge on MNIST's exact centring.
    """
    set_threads_from_env()
    steps = DEFAULT_STEPS[CLASSIFIER] if steps is None else steps
    lr = DEFAULT_LR[CLASSIFIER] if lr is None else lr
    data = load_images("mnist")
    train, heldout = split_heldout(data)
    torch.manual_seed(seed)
    model = build_model(CLASSIFIER)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    began = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc="train classifier", disable=not progress)
    for step in bar:
        index = batch_indices(len(images), batch_size, seed, step)
        logits, _ = model(_jitter(images[index]))
        loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    seconds = time.perf_counter() - began

    model.eval()
    all_logits, all_features = _classify(model, data.images)  # (5000, 10), (5000, F)
    held_logits, held_features = _classify(model, heldout.images)
    accuracy = float((held_logits.argmax(1) == heldout.labels).mean())
    out_dir = Path(out_dir)
    meta_config = {**model.config, "heldout_accuracy": round(accuracy, 4)}
    provenance = {"dataset": data.name, "steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr}
    onnx_path = export_classifier(model, meta_config, provenance, out_dir / "digits-classifier.onnx")
    features = all_features.astype(np.float64)
    train_features = _classify(model, train.images)[1].astype(np.float64)
    reference = {"mu": features.mean(0), "sigma": np.cov(features, rowvar=False),
                 "train_mu": train_features.mean(0), "train_sigma": np.cov(train_features, rowvar=False),
                 "heldout_features": held_features, "heldout_logits": held_logits,
                 "heldout_labels": heldout.labels, "heldout_images": _to_uint8(heldout.images)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **reference)
    npz_path = atomic_write(out_dir / "digits-reference.npz", lambda f: f.write(buffer.getvalue()))
    return {"heldout_accuracy": accuracy, "steps": steps, "seconds": round(seconds, 2),
            "feature_dim": model.config["feature_dim"], "classifier": str(onnx_path), "reference": str(npz_path),
            "config": json.loads(json.dumps(meta_config))}


def _to_uint8(images: np.ndarray) -> np.ndarray:
    # (N, 1, H, W) in [-1, 1], pixel / 127.5 − 1 → the pixels (N, H, W, 1) uint8 again
    return np.rint((images + 1.0) * 127.5).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _jitter(images: torch.Tensor) -> torch.Tensor:
    # images: (B, C, H, W) in [-1, 1]; a random similarity transform per image, background −1
    n = images.shape[0]
    angle = (torch.rand(n) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2) * 2 - 1) * (4 / images.shape[-1])  # ±2 px; the grid spans 2 units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images + 1, grid, align_corners=False) - 1


@torch.no_grad()
def _classify(model, images: np.ndarray, chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
    # images: (N, 1, 28, 28) → logits (N, 10), features (N, F), float32
    outputs = [model(torch.from_numpy(images[i:i + chunk])) for i in range(0, len(images), chunk)]
    return (torch.cat([o[0] for o in outputs]).numpy(), torch.cat([o[1] for o in outputs]).numpy())
