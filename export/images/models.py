# The image models: MLP GAN, DCGAN, convolutional VAE and the digit classifier that
# measures sample quality. Each is an nn.Module holding its full `config` dict;
# `build_image_model(family, config)` checks the sizes of a complete config (the package's
# build_model lays a partial one over IMAGE_DEFAULT_CONFIGS first).
# Images are (N, C, H, W) in [-1, 1]; latents z are (N, latent_dim) standard normal.
# `export_module` is the generator that ships (z → images: a VAE's decoder); a VAE's
# `export_encoder` (images → mean, log-variance) ships beside it, in the same graph.
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..common.batchnorm import global_batch_std

_IMAGE = {"channels": 1, "height": 28, "width": 28}
# How a GAN trains (train.py's _gan_step and optimizers): "bce", the non-saturating loss with
# real_label as D's target for real images (one-sided smoothing), or "hinge" (real_label unused);
# Adam's betas for both networks.
_GAN_TRAINING = {"loss": "bce", "real_label": 0.9, "adam_betas": [0.5, 0.999]}
GAN_LOSSES = ("bce", "hinge")
D_NORMS = ("batch", "spectral")
IMAGE_DEFAULT_CONFIGS = {
    "gan": {"latent_dim": 100, **_IMAGE, "g_hidden": [256, 512, 1024], "g_batchnorm": True,
            "d_hidden": [512, 256], "d_dropout": 0.3, "leaky_slope": 0.2, **_GAN_TRAINING},
    "dcgan": {"latent_dim": 100, **_IMAGE, "g_channels": [128, 64], "d_channels": [64, 128],
              "d_norm": "batch", "minibatch_std": False, "d_dropout": 0.3, "leaky_slope": 0.2,
              "init_std": 0.02, **_GAN_TRAINING},
    "vae": {"latent_dim": 8, **_IMAGE, "enc_channels": [32, 64], "dec_channels": [128, 64], "kl_weight": 1.0},
    "classifier": {**_IMAGE, "conv_channels": [16, 32, 64], "feature_dim": 128, "num_classes": 10},
}


def build_image_model(family: str, cfg: dict) -> nn.Module:
    """A fresh model of `family` ("gan", "dcgan", "vae" or "classifier") from a complete config."""
    if family in ("gan", "dcgan"):
        _check_gan_training(cfg)
    if family == "gan":
        return GAN(cfg, MLPGenerator(cfg), MLPDiscriminator(cfg))
    if family == "dcgan":
        if cfg["d_norm"] not in D_NORMS:
            raise ValueError(f"dcgan d_norm: expected one of {', '.join(D_NORMS)}, got {cfg['d_norm']!r}")
        if not isinstance(cfg["minibatch_std"], bool):
            raise ValueError(f"dcgan minibatch_std: expected true or false, got {cfg['minibatch_std']!r}")
        _check_divisible(cfg, len(cfg["g_channels"]), "dcgan generator")
        _check_divisible(cfg, len(cfg["d_channels"]), "dcgan discriminator")
        model = GAN(cfg, ConvGenerator(cfg, cfg["g_channels"]), ConvDiscriminator(cfg))
        if cfg["init_std"] is not None:  # a spectral-normalised D keeps torch's initialisation
            initialised = model if cfg["d_norm"] == "batch" else model.generator
            initialised.apply(lambda m: _dcgan_init(m, cfg["init_std"]))
        return model
    if family == "vae":
        _check_divisible(cfg, len(cfg["dec_channels"]), "vae decoder")
        _check_divisible(cfg, len(cfg["enc_channels"]), "vae encoder")
        return VAE(cfg)
    return DigitClassifier(cfg)


def _check_divisible(cfg: dict, halvings: int, what: str) -> None:
    factor = 2 ** halvings
    for key in ("height", "width"):
        if cfg[key] % factor:
            raise ValueError(
                f"{what}: image {key} {cfg[key]} must be a multiple of {factor} "
                f"({halvings} stride-2 layers); try image_size={max(factor, cfg[key] // factor * factor)}"
            )


def _check_gan_training(cfg: dict) -> None:
    if cfg["loss"] not in GAN_LOSSES:
        raise ValueError(f"gan loss: expected one of {', '.join(GAN_LOSSES)}, got {cfg['loss']!r}")
    betas = cfg["adam_betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"gan adam_betas: expected two numbers in [0, 1) such as [0.5, 0.999], got {betas!r}")


def _dcgan_init(module: nn.Module, std: float) -> None:
    # The DCGAN paper's initialisation: weights N(0, std), BN scales N(1, std), biases 0.
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, std)
        nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, std)
        nn.init.zeros_(module.bias)


def _image_numel(cfg: dict) -> int:
    return cfg["channels"] * cfg["height"] * cfg["width"]


class MLPGenerator(nn.Module):
    """z (N, latent) → Linear(+BN)+LeakyReLU per g_hidden width → Linear → tanh → (N, C, H, W)."""

    def __init__(self, cfg: dict):
        super().__init__()
        layers, width = [], cfg["latent_dim"]
        for hidden in cfg["g_hidden"]:
            layers.append(nn.Linear(width, hidden))
            if cfg["g_batchnorm"]:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.LeakyReLU(cfg["leaky_slope"]))
            width = hidden
        layers += [nn.Linear(width, _image_numel(cfg)), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.shape = (cfg["channels"], cfg["height"], cfg["width"])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """images (N, C, H, W) → Linear+LeakyReLU+Dropout per d_hidden width → 1 logit (N,)."""

    def __init__(self, cfg: dict):
        super().__init__()
        layers, width = [nn.Flatten()], _image_numel(cfg)
        for hidden in cfg["d_hidden"]:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(cfg["leaky_slope"]), nn.Dropout(cfg["d_dropout"])]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)


class ConvGenerator(nn.Module):
    """DCGAN generator, also the VAE decoder.

    z (N, latent) → Linear → BN+ReLU → (N, ch[0], H/2^k, W/2^k), then k = len(ch)
    ConvTranspose2d(4, stride 2, pad 1) doubling the size: BN+ReLU between, the last
    one to C channels. `logits` is the pre-tanh output; forward = tanh(logits).
    """

    def __init__(self, cfg: dict, channels: list[int]):
        super().__init__()
        k = len(channels)
        self.start = (channels[0], cfg["height"] // 2 ** k, cfg["width"] // 2 ** k)
        self.project = nn.Sequential(
            nn.Linear(cfg["latent_dim"], math.prod(self.start)), nn.BatchNorm1d(math.prod(self.start)), nn.ReLU()
        )
        layers = []
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(channels[-1], cfg["channels"], 4, 2, 1))
        self.upsample = nn.Sequential(*layers)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(-1, *self.start))  # (N, C, H, W)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.logits(z))


class ConvDiscriminator(nn.Module):
    """images (N, C, H, W) → Conv2d(4, stride 2, pad 1) + LeakyReLU per d_channels → Linear
    → 1 logit (N,).

    d_norm "batch": BN on all but the first conv, dropout after each (DCGAN). "spectral":
    spectral normalisation of every conv and of the linear, no BN (Miyato et al. 2018), dropout
    still d_dropout. minibatch_std: the standard deviation of the features over the batch,
    averaged to one number, joins them as an extra channel before the linear (Karras et al.
    2018, ProGAN): D can tell a batch of near-copies from real variety, which fights mode
    collapse. Over several ranks it spans the global batch (global_batch_std).
    """

    def __init__(self, cfg: dict):
        super().__init__()
        spectral = cfg["d_norm"] == "spectral"
        normed = nn.utils.parametrizations.spectral_norm if spectral else (lambda layer: layer)
        layers, c_in = [], cfg["channels"]
        for i, c_out in enumerate(cfg["d_channels"]):
            layers.append(normed(nn.Conv2d(c_in, c_out, 4, 2, 1)))
            if i > 0 and not spectral:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(cfg["leaky_slope"]))
            if cfg["d_dropout"]:
                layers.append(nn.Dropout(cfg["d_dropout"]))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.minibatch_std = cfg["minibatch_std"]
        k = len(cfg["d_channels"])
        width = (c_in + self.minibatch_std) * (cfg["height"] // 2 ** k) * (cfg["width"] // 2 ** k)
        self.head = nn.Sequential(nn.Flatten(), normed(nn.Linear(width, 1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.features(images)  # (N, C', H', W')
        if self.minibatch_std:
            std = global_batch_std(h).expand(h.shape[0], 1, *h.shape[2:])
            h = torch.cat([h, std], 1)
        return self.head(h).squeeze(1)


class GAN(nn.Module):
    """Generator + discriminator pair (MLP or DCGAN); only the generator ships."""

    def __init__(self, cfg: dict, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.config = cfg
        self.generator = generator
        self.discriminator = discriminator

    @property
    def export_module(self) -> nn.Module:
        return self.generator


class VAE(nn.Module):
    """Convolutional VAE: stride-2 conv encoder → (mu, logvar); ConvGenerator decoder.

    Loss (see `loss`): the negative ELBO per image, averaged over the batch, with
    pixels treated as Bernoulli probabilities p = (x + 1) / 2 — binary cross-entropy
    summed over pixels — plus kl_weight × KL(q(z|x) ‖ N(0, I)). Because
    tanh(a) = 2·sigmoid(2a) − 1, the decoder's tanh output in [-1, 1] is exactly that
    probability rescaled, and the BCE is taken on the logits 2a without any clamping.
    """

    def __init__(self, cfg: dict):
        super().__init__()
        self.config = cfg
        layers, c_in = [], cfg["channels"]
        for c_out in cfg["enc_channels"]:
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in = c_out
        k = len(cfg["enc_channels"])
        layers.append(nn.Flatten())
        self.encoder = nn.Sequential(*layers)
        self.to_stats = nn.Linear(c_in * (cfg["height"] // 2 ** k) * (cfg["width"] // 2 ** k), 2 * cfg["latent_dim"])
        self.decoder = ConvGenerator(cfg, cfg["dec_channels"])

    @property
    def export_module(self) -> nn.Module:
        return self.decoder

    @property
    def export_encoder(self) -> nn.Module:
        return VAEEncoder(self.encoder, self.to_stats)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.export_encoder(images)  # mu, logvar: each (N, latent)

    def loss(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, reconstruction, kl) for images (N, C, H, W) in [-1, 1], batch means."""
        mu, logvar = self.encode(images)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = 2.0 * self.decoder.logits(z)
        target = (images + 1.0) * 0.5
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1).mean()
        kl = (-0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum(1)).mean()
        return recon + self.config["kl_weight"] * kl, recon, kl


class VAEEncoder(nn.Module):
    """A VAE's encoder as a module of its own (sharing the VAE's layers): images (N, C, H, W)
    in [-1, 1] → (mean, log-variance) of q(z|x), each (N, latent)."""

    def __init__(self, features: nn.Module, to_stats: nn.Module):
        super().__init__()
        self.features = features
        self.to_stats = to_stats

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.to_stats(self.features(images)).chunk(2, dim=1)
        return mean, log_variance


class DigitClassifier(nn.Module):
    """images (N, 1, 28, 28) in [-1, 1] → (logits (N, classes), features (N, feature_dim)).

    Conv3×3+ReLU+MaxPool2 per conv_channels (28 → 14 → 7 → 3), then Linear+ReLU to
    the features (the penultimate layer, after its activation: what the Fréchet
    distance compares), dropout, and a Linear to the logits. About 98k parameters.
    """

    def __init__(self, cfg: dict):
        super().__init__()
        self.config = cfg
        layers, c_in, h, w = [], cfg["channels"], cfg["height"], cfg["width"]
        for c_out in cfg["conv_channels"]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, h, w = c_out, h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(c_in * h * w, cfg["feature_dim"]), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(cfg["feature_dim"], cfg["num_classes"]))

    @property
    def export_module(self) -> nn.Module:
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(images)
        return self.head(features), features
