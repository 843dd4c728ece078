"""The native latent sampler: exact against the numpy Philox reference, the right
distribution (moments, Kolmogorov-Smirnov), and the invariants users rely on."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import isa
import reference
from aigc_engine import ops


@isa.EACH
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), n=st.integers(1, 3), dim=st.sampled_from([1, 3, 4, 5, 17, 100, 513]),
       first_index=st.integers(0, 2**64 - 4))
def test_latents_match_numpy_philox_reference(isa_name, seed, n, dim, first_index):
    expected = reference.latents(seed, n, dim, first_index)
    with isa.forced(isa_name):
        ours = ops.sample_latent(n, dim, seed, first_index=first_index)
    # Both round float64 Box-Muller values to float32; the vector log/cos (≤ 4 ulp in
    # float64) and numpy's scalar ones may differ in the last bits of a float64, which
    # moves the float32 by at most one ulp. (dim 513: more pairs than one vector block.)
    np.testing.assert_array_max_ulp(ours, expected, maxulp=1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), truncation=st.sampled_from([0.3, 0.7, 1.5]))
def test_truncated_latents_match_reference(seed, truncation):
    ours = ops.sample_latent(2, 9, seed, truncation=truncation)
    np.testing.assert_array_max_ulp(ours, reference.latents(seed, 2, 9, truncation=truncation), maxulp=1)


def test_normal_moments_and_ks():
    z = ops.sample_latent(2000, 100, seed=123).ravel()
    n = z.size
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert abs(z.var() - 1) < 4 * math.sqrt(2 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # Each lane of the Box-Muller output is normal on its own, not just the pool.
    for lane in range(4):
        assert stats.kstest(z.reshape(-1, 4)[:, lane], "norm").pvalue > 1e-3


@pytest.mark.parametrize("truncation", [0.5, 1.0, 2.0])
def test_truncation_gives_the_truncated_normal(truncation):
    z = ops.sample_latent(500, 100, seed=7, truncation=truncation).ravel()
    assert np.abs(z).max() <= truncation
    assert stats.kstest(z, stats.truncnorm(-truncation, truncation).cdf).pvalue > 1e-3


def test_tiny_truncation_terminates_and_stays_in_range():
    # Acceptance is ~8e-5 per draw here, so most elements reach the uniform fallback.
    z = ops.sample_latent(20, 50, seed=1, truncation=1e-4).ravel()
    assert np.abs(z).max() <= 1e-4
    assert stats.kstest(z, stats.uniform(-1e-4, 2e-4).cdf).pvalue > 1e-3


def test_sample_i_does_not_depend_on_n_or_offset():
    full = ops.sample_latent(50, 100, seed=9)
    assert np.array_equal(ops.sample_latent(7, 100, seed=9), full[:7])
    assert np.array_equal(ops.sample_latent(10, 100, seed=9, first_index=40), full[40:])


def test_seeds_and_rows_are_distinct():
    a = ops.sample_latent(4, 100, seed=1)
    b = ops.sample_latent(4, 100, seed=2)
    assert not np.array_equal(a, b)
    assert len({row.tobytes() for row in a}) == 4


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3", True])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match="seed"):
        ops.sample_latent(1, 4, seed)


@pytest.mark.parametrize("truncation", [0, -0.5, float("nan"), "1"])
def test_bad_truncation_is_rejected(truncation):
    with pytest.raises(ValueError, match="truncation"):
        ops.sample_latent(1, 4, 0, truncation=truncation)


def test_wrong_output_arrays_name_the_problem():
    with pytest.raises(ValueError, match=r"out: expected C-contiguous float32 \(n, dim\), got float64 \(2, 3\)"):
        ops.sample_latent(2, 3, 0, out=np.empty((2, 3)))
    with pytest.raises(ValueError, match="non-contiguous"):
        ops.sample_latent(2, 3, 0, out=np.empty((3, 2), np.float32).T)
    readonly = np.empty((2, 3), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.sample_latent(2, 3, 0, out=readonly)
    with pytest.raises(ValueError, match="device"):
        ops.sample_latent(2, 3, 0, device="tpu")
