"""ops.sample / ops.Sampler per-row arguments given as one number: an integer argument
(seeds, steps, top_k) takes integers in its dtype's range only — 1.5 is refused by name,
not truncated to 1 — and numpy scalars broadcast like Python numbers."""

import re

import numpy as np
import pytest

from aigc_engine import ops
from aigc_engine.errors import AigcError

MAX_SEED = 2**64 - 1
KNOBS = {"steps": 0, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
         "presence_penalty": 0.0, "frequency_penalty": 0.0}


@pytest.mark.parametrize("name", ["seeds", "steps", "top_k"])
@pytest.mark.parametrize("value", [1.5, 1.0, np.float64(1.9), np.float32(2.0)])
def test_integer_per_row_parameters_refuse_non_integers(name, value):
    logits = np.zeros((2, 8), np.float32)
    options = {"seeds": 1, **KNOBS, name: value}
    with pytest.raises(AigcError, match=f"^{name}: expected integers, got {re.escape(repr(value))}$"):
        ops.sample(logits, **options)
    with pytest.raises(AigcError, match=f"^{name}: expected integers"):
        ops.Sampler(2, 8, **options)


@pytest.mark.parametrize("name, value", [("seeds", -1), ("seeds", 2**64), ("top_k", 2**31), ("steps", -1)])
def test_integer_per_row_parameters_refuse_values_out_of_their_range(name, value):
    with pytest.raises(AigcError, match=f"^{name}: expected integers in"):
        ops.sample(np.zeros((2, 8), np.float32), **{"seeds": 1, **KNOBS, name: value})


def test_float_seed_arrays_are_refused_and_integer_scalars_broadcast():
    logits = np.random.default_rng(0).normal(size=(3, 50)).astype(np.float32)
    with pytest.raises(ValueError, match="seeds: expected C-contiguous uint64"):
        ops.sample(logits, seeds=np.array([1.5, 1.5, 1.5]), **KNOBS)
    expected = ops.sample(logits, seeds=np.full(3, MAX_SEED, np.uint64), **KNOBS).tokens
    for seeds in (MAX_SEED, np.uint64(MAX_SEED)):
        np.testing.assert_array_equal(ops.sample(logits, seeds=seeds, **KNOBS).tokens, expected)
