"""The native LSTM (csrc/runtime/lstm.cc, aigc_engine/text/native_lstm.py) against independent
references: a plain torch loop and the onnxruntime backend on a tiny exported LSTM (greedy
tokens identical, logits within float32 rounding), seeded tokens that do not depend on
what shares the batch, cancellation and recomputation of a sequence's state, and the
shipped pycode-lstm against its onnxruntime backend."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aigc_engine import AigcError, SamplingParams, TextGenerator, ops  # noqa: E402
from aigc_engine.artifacts.registry import MODELS_DIR  # noqa: E402
from text_fixtures import export_tiny, torch_greedy  # noqa: E402

torch.set_num_threads(1)
PROMPTS = ["def add(a, b):", "class", "héllo wörld 😀", "x", "class Point:\n    x: int = 0\n"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny-lstm"), "lstm", seed=3)


def load(tiny, backend="native", **options) -> TextGenerator:
    return TextGenerator.load(str(tiny[1]), backend=backend, **options)


def test_native_is_the_default_on_the_cpu_and_onnxruntime_on_cuda(tiny):
    assert load(tiny, None).backend == "native"
    if ops.cuda_available():
        assert load(tiny, None, device="cuda").backend == "onnxruntime"
    else:  # the graph's CUDA provider is what is missing, not the native LSTM's device
        with pytest.raises(AigcError, match="no CUDA provider|CUDA") as failure:
            load(tiny, None, device="cuda")
        assert "native LSTM" not in str(failure.value)


def test_a_state_too_large_for_memory_fails_clearly(tiny):
    with pytest.raises(AigcError, match=r"max_batch_size=1000000000000 \(the LSTM's state slots\) needs"):
        load(tiny, max_batch_size=10**12)


def test_greedy_equals_torch_and_onnxruntime(tiny):
    params = SamplingParams(max_new_tokens=30, temperature=0.0, ignore_eos=True)
    native = load(tiny)
    prompts = [native.tokenizer.encode(p) for p in PROMPTS]  # ids: no token healing
    ort = load(tiny, "onnxruntime").generate(prompts, params)
    for prompt, n, o in zip(prompts, native.generate(prompts, params), ort):
        assert n.token_ids == o.token_ids == torch_greedy(tiny[0], prompt, 30), prompt


def test_logits_match_onnxruntime(tiny):
    """Every position of a prompt (the prefill) and of a greedy continuation fed back one
    token per step (decode rows), against onnxruntime's logits for the same tokens."""
    native, ort = load(tiny), load(tiny, "onnxruntime")
    ids = native.tokenizer.encode(PROMPTS[4])
    ids += native.generate([ids], SamplingParams(max_new_tokens=20, temperature=0.0, ignore_eos=True))[0].token_ids
    got = np.concatenate(list(native.scheduler.backend.prompt_logits(ids, chunk=7)))
    want = np.concatenate(list(ort._model.prompt_logits(ids)))
    assert got.shape == want.shape == (len(ids) - 1, 300)
    # float32 sums of ~50 products in another order: a few ulp of the largest term.
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)
    with torch.no_grad():
        reference = tiny[0].loss_logits(torch.tensor([ids[:-1]]))[0].numpy()
    np.testing.assert_allclose(got, reference, atol=1e-5 * np.abs(reference).max(), rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_seeded_tokens_do_not_depend_on_the_batch(tiny, dtype):
    params = SamplingParams(max_new_tokens=25, temperature=1.0, top_p=0.95, seed=11, ignore_eos=True)
    alone = load(tiny, dtype=dtype).generate(PROMPTS[0], params)[0].token_ids
    others = [SamplingParams(max_new_tokens=n, temperature=0.9, seed=n, ignore_eos=True) for n in (3, 40, 12, 7)]
    for batch in (1, 2, 5):
        generator = load(tiny, dtype=dtype, max_batch_size=batch)
        mixed = generator.generate(PROMPTS[1:] + PROMPTS[:1], others + [params])
        assert mixed[-1].token_ids == alone, (dtype, batch)
        assert [len(c.token_ids) for c in mixed[:-1]] == [3, 40, 12, 7]


def test_seeded_sampling_equals_onnxruntime(tiny):
    params = [SamplingParams(max_new_tokens=20, temperature=0.8, top_k=50, seed=s, ignore_eos=True) for s in (1, 2)]
    native = load(tiny).generate(PROMPTS[:2], params)
    ort = load(tiny, "onnxruntime").generate(PROMPTS[:2], params)
    assert [c.token_ids for c in native] == [c.token_ids for c in ort]


def test_bfloat16_and_int8_stay_near_float32(tiny):
    ids = load(tiny).tokenizer.encode(PROMPTS[4])
    exact = np.concatenate(list(load(tiny).scheduler.backend.prompt_logits(ids)))
    for dtype, bits in (("bfloat16", 8), ("int8", 7)):
        got = np.concatenate(list(load(tiny, dtype=dtype).scheduler.backend.prompt_logits(ids)))
        # Weights rounded to `bits` bits: each logit moves by a small multiple of 2**-bits of its scale.
        assert np.abs(got - exact).max() < 8 * 2.0**-bits * np.abs(exact).max(), dtype
        assert not np.array_equal(got, exact)


def test_cancel_frees_the_slot_and_leaves_the_others_alone(tiny):
    generator = load(tiny, max_batch_size=3)
    params = SamplingParams(max_new_tokens=15, temperature=0.9, seed=4, ignore_eos=True)
    expected = generator.generate("class", params)[0].token_ids
    scheduler = generator.scheduler
    stream = generator.stream("def", SamplingParams(max_new_tokens=50, seed=1, ignore_eos=True))
    next(stream)  # the victim runs, holding a state slot
    assert scheduler.stats()["free_blocks"] == 2
    stream.close()  # leaving early cancels it
    assert scheduler.stats() == {"running": 0, "free_blocks": 3, "num_blocks": 3, "preemptions": 0}
    assert generator.generate("class", params)[0].token_ids == expected


def test_a_rewound_sequence_is_recomputed_exactly(tiny):
    """Rewinding (what a step cut short by KeyboardInterrupt does) refills the prompt from the
    zero state and replays the generated tokens one per step: the same tokens after."""
    generator = load(tiny)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=9, ignore_eos=True)
    ids = generator.tokenizer.encode("x = ")
    expected = generator.generate([ids], params)[0].token_ids
    native = generator.scheduler._native
    native.add(0, ids, 9, 1.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, [], [], -1, 12, -1)
    tokens = []
    for _ in range(5):
        tokens += native.step()[1]
    native.rewind(0, 2)
    tokens = tokens[:2]
    while native.num_running or native.num_waiting:
        tokens += native.step()[1]
    assert native.preemptions == 1
    assert tokens == expected


shipped = pytest.mark.skipif(not (MODELS_DIR / "pycode-lstm.onnx").is_file(), reason="pycode-lstm is not installed")


@shipped
def test_shipped_model_native_equals_onnxruntime_greedy():
    prompts = ["import os\n", "def parse_args(", "class Config:\n    "]
    params = SamplingParams(max_new_tokens=48, temperature=0.0, ignore_eos=True)
    native = [c.token_ids for c in TextGenerator.load("pycode-lstm").generate(prompts, params)]
    ort = [c.token_ids for c in TextGenerator.load("pycode-lstm", backend="onnxruntime").generate(prompts, params)]
    assert native == ort
