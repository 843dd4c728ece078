"""ImageGenerator on a small generator graph: images equal the numpy math of the graph
on the native latents, and do not depend on n, batch size or chunking."""

import numpy as np
import onnx
import pytest

import reference
from aigc_engine import AigcError, ImageGenerator, ops
from aigc_engine.images import memory
from onnx_models import reference_images, write_generator


@pytest.fixture
def generator(tmp_path):
    path = write_generator(tmp_path / "tiny.onnx", latent_dim=8, shape=(3, 4, 6))
    return ImageGenerator.load(str(path), num_threads=1), onnx.load(str(path))


def test_sample_equals_the_reference_pipeline(generator):
    gen, model = generator
    images = gen.sample(10, seed=3, truncation=0.8)
    z = reference.latents(3, 10, 8, truncation=0.8)
    expected = reference.images_to_uint8(reference_images(model, z))
    assert images.shape == (10, 4, 6, 3) and images.dtype == np.uint8
    # Allow one grey level where onnxruntime's tanh rounds differently from numpy's.
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1


def test_image_i_is_independent_of_n_and_batch_size(generator):
    gen, _ = generator
    full = gen.sample(37, seed=5, batch_size=64)
    for batch_size in (1, 7, 36):
        np.testing.assert_array_equal(gen.sample(37, seed=5, batch_size=batch_size), full)
    np.testing.assert_array_equal(gen.sample(4, seed=5), full[:4])


def test_interpolation_ends_on_the_two_seeds(generator):
    gen, _ = generator
    path = gen.interpolate(11, 12, n=6)
    assert path.shape[0] == 6
    np.testing.assert_array_equal(path[0], gen.sample(1, seed=11)[0])
    np.testing.assert_array_equal(path[-1], gen.sample(1, seed=12)[0])
    z = gen.interpolation_latents(11, 12, 6)
    a, b = ops.sample_latent(1, 8, 11)[0], ops.sample_latent(1, 8, 12)[0]
    np.testing.assert_allclose(z, reference.slerp(a, b, np.linspace(0, 1, 6)), atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda g: g.sample(0), "n: expected an integer >= 1, got 0"),
    (lambda g: g.sample(-3), "n: expected an integer >= 1"),
    (lambda g: g.sample(2.5), "n: expected an integer >= 1"),
    (lambda g: g.sample(10**13), "needs .* GiB of memory, but only .* GiB is available"),
    (lambda g: g.sample(2, truncation=0), "truncation: expected > 0"),
    (lambda g: g.sample(2, seed=-1), "seed"),
    (lambda g: g.sample(2, batch_size=0), "batch_size"),
    (lambda g: g.decode(np.zeros((2, 5), np.float32)), r"z: expected float32 \(n, 8\)"),
    (lambda g: g.decode(np.zeros((2, 8), np.float64)), r"z: expected float32 \(n, 8\)"),
])
def test_bad_requests_name_the_problem(generator, call, message):
    with pytest.raises(AigcError, match=message):
        call(generator[0])


def test_bad_backend_and_device(tmp_path):
    path = str(write_generator(tmp_path / "tiny.onnx"))
    with pytest.raises(AigcError, match="backend"):
        ImageGenerator.load(path, backend="native")
    with pytest.raises(AigcError, match="device"):
        ImageGenerator.load(path, device="gpu")


def test_memory_check_uses_available_memory():
    assert memory.available_bytes() > 2**20


def test_slerp_takes_array_likes_and_names_a_bad_argument():
    a, b = [1.0, 0.0, 0.0], np.array([0.0, 1.0, 0.0])  # a list, a float64 array
    np.testing.assert_allclose(ops.slerp(a, b, [0.0, 0.5, 1.0]),
                               reference.slerp(np.array(a), b, np.array([0.0, 0.5, 1.0])), atol=1e-6)
    for args, name in [(("ab", b, [0.5]), "a"), ((a, [[1.0]], [0.5]), "b"), ((a, b, [[0.5]]), "t"),
                       ((a, [1.0, 0.0], [0.5]), "a, b"), (([], [], [0.5]), "a, b")]:
        with pytest.raises(AigcError, match=f"^{name}: "):
            ops.slerp(*args)
