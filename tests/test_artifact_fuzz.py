"""Fuzzing the model-file loader's metadata (aigc.family, aigc.format_version, aigc.config,
aigc.provenance, aigc.tokenizer) on copies of the embedded models.

Whatever the metadata say, loading ends in a usable model (read_artifact, then the
text backends built on it) or in a ModelFileError / AigcError whose message names the
file: never another exception type, never a hang, never an allocation that scales with a
number the file claims. The base files are read once per module.
"""

from __future__ import annotations

import json
import signal
import time
import tracemalloc
from contextlib import contextmanager

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_models import embedded_model

from aigc_engine import AigcError, TextGenerator
from aigc_engine.artifacts.artifact import read_artifact
from aigc_engine.artifacts.schema import FAMILIES, TEXT_FAMILIES

BASES = {name: embedded_model(name).SerializeToString() for name in ("pycode-gpt", "pycode-lstm", "digits-gan")}
SECONDS = 30          # per example: far above a real load (~0.3 s), far below a hang
PEAK_BYTES = 300 << 20  # Python-side peak per example: the weights read one at a time
FUZZ = settings(deadline=None, max_examples=25, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def base_config(name: str) -> dict:
    model = onnx.ModelProto.FromString(BASES[name])
    return json.loads(next(p.value for p in model.metadata_props if p.key == "aigc.config"))


# Values a config must survive: the boundaries, the absurd, the wrongly typed. Listed
# twice in VALUES so that about half the values drawn are these.
HOSTILE = st.sampled_from([0, 1, 2, 3, 4, 8, 255, 256, 384, 4096, -1, 1e9, 10**9, 2**31, 2**63, 2**70, 10**30,
                           1e-5, 0.5, 2.5, float("nan"), float("inf"), -float("inf"), True, False, None, "abc", "4",
                           [], {}, [4], int("9" * 4000)])
SCALARS = st.one_of(st.integers(-2**80, 2**80), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
VALUES = st.one_of(HOSTILE, HOSTILE, SCALARS, st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                                                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                                                           max_leaves=8))
EXTRA_KEYS = ("layer_norm_epsilon", "hidden_size", "latent_dim", "channels", "height", "width", "n_head")


@st.composite
def configs(draw, name: str) -> dict:
    """The base model's config with a few of its keys removed or replaced, maybe more added."""
    config = base_config(name)
    keys = sorted(set(config) | set(EXTRA_KEYS))
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
        if draw(st.integers(0, 3)) == 0:
            config.pop(key, None)
        else:
            config[key] = draw(VALUES)
    config.update(draw(st.dictionaries(st.text(max_size=8), VALUES, max_size=2)))
    return config


def nested(depth: int) -> str:
    return '{"n_layer": ' + "[" * depth + "]" * depth + "}"


RAW_JSON = st.one_of(
    st.text(max_size=40),
    st.sampled_from([1, 2, 40, 999, 5000, 200_000]).map(nested),
    st.sampled_from([1, 20, 4300, 4301, 6000]).map(lambda n: '{"n_layer": ' + "9" * n + "}"),
    VALUES.map(json.dumps),
)


@contextmanager
def bounded(path):
    """Fail on a hang (an alarm) or a large Python-side allocation."""
    def hang(signum, frame):
        raise TimeoutError(f"{path}: loading took over {SECONDS} s")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(SECONDS)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert peak < PEAK_BYTES, f"{path}: loading allocated {peak / 2**20:.0f} MiB"
    assert time.perf_counter() - start < SECONDS


def load_or_refuse(path) -> None:
    """A valid load (and, for text, its backends built), or an AigcError naming the file."""
    with bounded(path):
        try:
            artifact = read_artifact(path)
            if artifact.family in TEXT_FAMILIES:
                for backend in ("native", "onnxruntime"):
                    TextGenerator(read_artifact(path), backend=backend, kv_cache_mb=1)
        except AigcError as error:  # ModelFileError is one
            assert str(path) in str(error), f"the message does not name the file: {error}"


def write(tmp_path, name: str, **metadata) -> str:
    model = onnx.ModelProto.FromString(BASES[name])
    props = {p.key: p.value for p in model.metadata_props}
    props.update(metadata)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {k: v for k, v in props.items() if v is not None})
    path = tmp_path / "fuzz.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("name", sorted(BASES))
def test_random_configs(tmp_path, name):
    @FUZZ
    @given(config=configs(name))
    def run(config):
        load_or_refuse(write(tmp_path, name, **{"aigc.config": json.dumps(config)}))
    run()


@pytest.mark.parametrize("name", sorted(BASES))
def test_nearby_sizes(tmp_path, name):
    # Plausible numbers, near the real ones: they get past the type checks and meet the
    # checks of the graph and the weights.
    sizes = st.sampled_from([0, 1, 2, 3, 4, 5, 8, 16, 24, 32, 64, 128, 255, 256, 384, 512, 1024, 4095, 4096])

    keys = sorted(set(base_config(name)) | set(EXTRA_KEYS))

    @FUZZ
    @given(changes=st.dictionaries(st.sampled_from(keys), sizes, min_size=1, max_size=2))
    def run(changes):
        load_or_refuse(write(tmp_path, name, **{"aigc.config": json.dumps({**base_config(name), **changes})}))
    run()


def test_random_metadata(tmp_path):
    @FUZZ
    @given(name=st.sampled_from(sorted(BASES)),
           family=st.one_of(st.none(), st.sampled_from(FAMILIES), st.text(max_size=10)),
           version=st.one_of(st.none(), st.sampled_from(["0", "1", "2", "-1", "1.0", " 1", "١", "9" * 5000]),
                             st.text(max_size=6)),
           config=st.one_of(st.none(), RAW_JSON),
           provenance=st.one_of(st.none(), RAW_JSON),
           tokenizer=st.one_of(st.none(), st.just(""), st.text(max_size=20), st.just('{"version": "1.0"}')))
    def run(name, family, version, config, provenance, tokenizer):
        metadata = {"aigc.family": family, "aigc.format_version": version, "aigc.config": config,
                    "aigc.provenance": provenance, "aigc.tokenizer": tokenizer}
        # Each None keeps the base file's value: the others replace it.
        load_or_refuse(write(tmp_path, name, **{k: v for k, v in metadata.items() if v is not None}))
    run()
