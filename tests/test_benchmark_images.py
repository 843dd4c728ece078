"""benchmarks/images.py's peers build and run for every shipped image model: the PyTorch network
from the file's config (a VAE's config also carries its latent prior, no layer of it) and
onnxruntime on the file's z → images graph, each giving the pixels aigc_engine gives in shape
and type."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("aigc_export")

from aigc_engine import ImageGenerator  # noqa: E402
from aigc_engine.artifacts.registry import MODELS_DIR, embedded_names  # noqa: E402

BENCHMARKS = str(Path(__file__).resolve().parent.parent / "benchmarks")
sys.path.insert(0, BENCHMARKS)
import images  # noqa: E402

# Only for the import above: the folder's scripts would shadow installed modules of the same name.
sys.path[:] = [entry for entry in sys.path if entry != BENCHMARKS]


@pytest.mark.parametrize("name", embedded_names(("gan", "dcgan", "vae")))
def test_every_peer_runs_every_shipped_model(name):
    generator = ImageGenerator.load(name)
    ours = generator.sample(3, seed=0)  # (3, H, W, C) uint8
    peers = (images.torch_system(name, 1), images.onnxruntime_system(MODELS_DIR / f"{name}.onnx",
                                                                     generator.latent_dim, 1))
    for run in peers:
        pixels = run(3)
        assert pixels.shape == ours.shape and pixels.dtype == ours.dtype
