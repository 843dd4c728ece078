# The quality figures stamped in each shipped model's provenance are what the runtime measures:
# exactly, with the samples export scored (same n and seed), and within sampling error with
# other samples (another seed; for the text models a spread subset of the held-out windows
# and 20 fresh samples for the parse rate). So README's table, regenerated from `aigc eval`,
# and the files' own provenance cannot drift apart.
import math

import numpy as np
import pytest

from aigc_engine import ImageGenerator, TextGenerator
from aigc_engine.artifacts.registry import MODELS_DIR, embedded_names
from aigc_engine.images.quality import DigitClassifier, evaluate_model
from aigc_engine.text import quality as text_quality

IMAGE_MODELS = embedded_names(("gan", "dcgan", "vae"))
TEXT_MODELS = embedded_names(("gpt", "lstm"))
OTHER_SEEDS = 6
T_999 = 6.869  # Student's t for a two-sided 99.9 % interval, OTHER_SEEDS − 1 = 5 degrees of freedom


def _stamped(generator) -> dict:
    quality = generator.artifact.provenance.get("quality")
    assert quality, f"{generator.artifact.name}: no quality stamped in its provenance"
    return quality


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_figures_are_reproduced_and_within_sampling_error(name):
    generator = ImageGenerator.load(name)
    stamped = _stamped(generator)
    n = stamped["n"]
    classifier = DigitClassifier()  # loaded once for every draw below
    again = evaluate_model(generator, n, seed=0, classifier=classifier)  # export scored seed 0
    for key in ("frechet_distance", "class_entropy_bits", "mean_confidence"):
        assert again[key] == pytest.approx(stamped[key], rel=1e-5, abs=1e-6), key

    # FD of n = 1000 samples varies by about ±10 from seed to seed (measured over 10 seeds on the
    # shipped files: sd 7 to 13; digits-gan 54-82), so the stamped figure (seed 0) is one draw.
    # It must fall within the 99.9 % prediction interval of k = OTHER_SEEDS other draws: their
    # mean ± t · s · √(1 + 1/k), with Student's t for k − 1 degrees of freedom.
    others = [classifier.report(generator.sample(n, seed)) for seed in range(1, OTHER_SEEDS + 1)]
    distances = np.array([other.frechet_distance for other in others])
    spread = T_999 * distances.std(ddof=1) * math.sqrt(1 + 1 / OTHER_SEEDS)
    assert abs(stamped["frechet_distance"] - distances.mean()) <= spread, (stamped["frechet_distance"], distances)
    assert all(other.classes_present == stamped["classes_present"] == 10 for other in others)
    # A mean of n values in [0, 1] with mean p has a standard error of at most sqrt(p (1 − p) / n)
    p = stamped["mean_confidence"]
    assert abs(others[0].mean_confidence - p) <= 4 * math.sqrt(2 * p * (1 - p) / n)


@pytest.fixture(scope="module", params=TEXT_MODELS)
def text_model(request):
    return TextGenerator.load(request.param)


def test_held_out_bits_per_byte_agree_within_sampling_error(text_model):
    stamped = _stamped(text_model)["bits_per_byte"]
    windows = text_quality.heldout_windows(text_model, text_quality.heldout_texts(), max_windows=16)
    per_window = [text_quality.bits_per_byte(text_model, [window]) for window in windows]
    bits = np.array([b * size for b, _, size in per_window])
    size = np.array([size for _, _, size in per_window], dtype=np.float64)
    ratio = bits.sum() / size.sum()
    # the standard error of a ratio estimator Σ bits / Σ bytes over k sampled windows
    error = np.std(bits - ratio * size, ddof=1) / (size.mean() * math.sqrt(len(windows)))
    assert abs(ratio - stamped) <= 4 * error + 0.01, (ratio, stamped, error)


def test_the_parse_rate_agrees_within_sampling_error(text_model):
    stamped = _stamped(text_model)
    n, p = stamped["parse_samples"], stamped["parse_rate"]
    assert n >= 100 and 0 <= p <= 1
    k = 20
    _, parsing = text_quality.parse_rate(text_model, k, seed=10_000)  # samples export did not draw
    spread = math.sqrt(max(p * (1 - p), 1 / n) * (1 / k + 1 / n))
    assert abs(parsing / k - p) <= 4 * spread + 1 / k, (parsing, k, p)


def test_the_shipped_models_fit_the_wheel_budget():
    # every file the wheel carries in aigc_engine/models, together at most 60 MB
    total = sum(path.stat().st_size for path in MODELS_DIR.iterdir() if path.is_file())
    assert total <= 60e6, f"the shipped models take {total / 1e6:.1f} MB, over the 60 MB budget"
