"""The quality figures: the Fréchet distance against scipy's matrix square root, and the
class statistics on logits whose answer is known."""

import json
import math

import numpy as np
import pytest
from scipy import linalg

from aigc_engine import AigcError
from aigc_engine.images.quality import frechet_distance, summarize


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("dim, seed", [(2, 0), (16, 1), (64, 2)])
def test_frechet_distance_matches_scipy(dim, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 4 * dim, dim))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b @ rng.normal(size=(dim, dim)), rowvar=False)
    mu1, mu2 = rng.normal(size=(2, dim))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_distance_of_a_gaussian_to_itself_is_zero():
    s = np.cov(np.random.default_rng(0).normal(size=(100, 8)), rowvar=False)
    assert abs(frechet_distance(np.zeros(8), s, np.zeros(8), s)) < 1e-9


def test_summarize_counts_classes_and_confidence():
    logits = np.full((20, 10), -50.0)
    logits[np.arange(20), np.arange(20) % 4] = 0.0  # four classes, five each, fully confident
    features = np.random.default_rng(0).normal(size=(20, 3))
    report = summarize(logits, features, features.mean(0), np.cov(features, rowvar=False))
    assert report.classes_present == 4
    assert report.class_entropy_bits == pytest.approx(2.0)
    assert report.mean_confidence == pytest.approx(1.0)
    assert abs(report.frechet_distance) < 1e-9


@pytest.mark.parametrize("n", [1, 2, 3])
def test_summarize_needs_more_samples_than_features(n):
    features = np.random.default_rng(0).normal(size=(n, 3))
    with pytest.raises(AigcError, match=f"3 features, which needs more samples than features: at least 4, got {n}"):
        summarize(np.zeros((n, 10)), features, np.zeros(3), np.eye(3))


def test_one_class_has_an_entropy_of_plus_zero():
    features = np.random.default_rng(0).normal(size=(8, 3))
    report = summarize(np.eye(10)[np.zeros(8, int)] * 50, features, np.zeros(3), np.eye(3))
    assert report.classes_present == 1
    assert report.class_entropy_bits == 0.0 and math.copysign(1.0, report.class_entropy_bits) == 1.0
    assert "-0.0" not in json.dumps(report.as_dict())
