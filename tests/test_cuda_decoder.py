"""The GPT decoder on CUDA (_C.CudaGptModel, TextGenerator(device="cuda")) against the CPU
decoder on the same models — a tiny GPT, a GPT-2 imported from transformers, pycode-gpt:
logits of the same packed steps (prompts and decode rows), greedy tokens, and seeded tokens
that do not depend on what shares the batch. These skip without a GPU. Everywhere else,
device="cuda" fails at once, naming why (a CPU-only build, or no visible device)."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import aigc_export  # noqa: E402
from aigc_engine import SamplingParams, TextGenerator, _C, ops  # noqa: E402
from aigc_engine.artifacts.registry import resolve  # noqa: E402
from aigc_engine.errors import AigcError  # noqa: E402

from hf_fixtures import save_gpt2  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402

needs_gpu = pytest.mark.skipif(not ops.cuda_available(), reason="no CUDA device (or a CPU-only build)")
no_gpu = pytest.mark.skipif(ops.cuda_available(), reason="a CUDA device is visible")
WHY = ("needs a CUDA device, and none is visible" if _C.cuda_compiled
       else "needs CUDA, and this build of aigc_engine has no CUDA support")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cuda-decoder")
    _, tiny = export_tiny(folder, "gpt")
    save_gpt2(folder / "hf", n_layer=2, n_head=4, n_embd=64, n_positions=128, seed=3)
    gpt2 = aigc_export.import_hf(folder / "hf", folder / "gpt2.onnx")
    _, lstm = export_tiny(folder, "lstm")
    return {"tiny": tiny, "gpt2": gpt2, "lstm": lstm, "pycode-gpt": Path(resolve("pycode-gpt"))}


class Sequences:
    """Packed steps over one decoder's cache: each sequence's blocks, what it holds so far."""

    def __init__(self, backend):
        self.backend = backend
        self.blocks: list[list[int]] = []
        self.tokens: list[list[int]] = []

    def step(self, decoding: list[tuple[int, int]], prompts: list[list[int]]) -> np.ndarray:
        """Decode rows (sequence, new token) first, then new prompts, as one forward; the logits."""
        rows = []  # (sequence, its new tokens, is_prompt)
        for seq, token in decoding:
            self.tokens[seq].append(token)
            rows.append((seq, [token], False))
        for prompt in prompts:
            self.tokens.append(list(prompt))
            self.blocks.append(self.backend.cache.allocate(self.backend.blocks_for(48)))
            rows.append((len(self.tokens) - 1, list(prompt), True))
        tokens, positions, cu, context = [], [], [0], []
        for seq, new, _ in rows:
            held = len(self.tokens[seq])
            tokens += new
            positions += range(held - len(new), held)
            cu.append(len(tokens))
            context.append(held)
        table = np.array([self.blocks[seq] for seq, _, _ in rows], np.int32)
        logits = np.empty((len(rows), self.backend.vocab_size), np.float32)
        self.backend.model.forward(np.array(tokens, np.int64), np.array(positions, np.int64), np.array(cu, np.int32),
                                   np.array(context, np.int32), np.array([p for _, _, p in rows], np.uint8), table,
                                   self.backend.cache, logits)
        return logits


def backend_of(path: Path, device: str, dtype: str, kv_dtype: str):
    return TextGenerator.load(str(path), backend="native", device=device, dtype=dtype, kv_dtype=kv_dtype,
                              kv_cache_mb=4).scheduler.backend


# float32 everywhere: the CPU's and the GPU's sums differ in order only. bf16 weights: the
# same rounded weights on both, float32 activations. A bf16 cache: a key or value that lies
# at a rounding boundary may round to the neighbouring bf16 on one device (one 2**-8 step).
TOLERANCE = {("float32", "float32"): 1e-3, ("bfloat16", "float32"): 2e-3, ("float32", "bfloat16"): 3e-2}


@needs_gpu
@pytest.mark.parametrize("model", ["tiny", "gpt2", "pycode-gpt"])
@pytest.mark.parametrize("dtype, kv_dtype", list(TOLERANCE))
def test_logits_of_packed_steps_match_the_cpu_decoder(models, model, dtype, kv_dtype):
    cpu, cuda = (Sequences(backend_of(models[model], device, dtype, kv_dtype)) for device in ("cpu", "cuda"))
    rng = np.random.default_rng(7)
    vocab = cpu.backend.vocab_size

    def prompt(length):
        return rng.integers(0, vocab, length).tolist()

    steps = [([], [prompt(5), prompt(17)]),                              # prompts only
             ([(0, 11), (1, 12)], [prompt(1), prompt(9)]),               # decode rows, then prompts
             ([(0, 13), (1, 14), (2, 15), (3, 16)], []),                 # decode rows only
             ([(3, 17), (1, 18)], [prompt(20)])]
    for decoding, prompts in steps:
        expected = cpu.step(decoding, prompts)
        got = cuda.step(decoding, prompts)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE[dtype, kv_dtype])
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


PROMPTS = ["def add(a, b):", "class Point:\n", "héllo", "x"]


@needs_gpu
@pytest.mark.parametrize("model", ["tiny", "gpt2", "pycode-gpt"])
def test_greedy_tokens_equal_the_cpu_decoder(models, model):
    params = SamplingParams(max_new_tokens=40, temperature=0.0, ignore_eos=True)
    cpu = TextGenerator.load(str(models[model]), backend="native").generate(PROMPTS, params)
    cuda = TextGenerator.load(str(models[model]), backend="native", device="cuda").generate(PROMPTS, params)
    assert [c.token_ids for c in cuda] == [c.token_ids for c in cpu]
    assert all(len(c.token_ids) == 40 for c in cuda)


@needs_gpu
@pytest.mark.parametrize("model", ["tiny", "gpt2", "pycode-gpt"])
def test_seeded_tokens_do_not_depend_on_the_batch(models, model):
    generator = TextGenerator.load(str(models[model]), backend="native", device="cuda")
    seeded = SamplingParams(max_new_tokens=32, temperature=1.0, top_p=0.95, seed=1234, ignore_eos=True)
    alone = generator.generate(["def add(a, b):"], seeded)[0].token_ids
    others = [SamplingParams(max_new_tokens=n, temperature=0.8, seed=n, ignore_eos=True) for n in (5, 40, 17)]
    crowded = generator.generate(["class Point:\n", "def add(a, b):", "x", "héllo wörld"],
                                 [others[0], seeded, others[1], others[2]])[1].token_ids
    assert crowded == alone and len(alone) == 32


@no_gpu
def test_native_gpt_on_cuda_without_a_gpu_says_why(models):
    with pytest.raises(AigcError, match=f"^device='cuda': the native GPT decoder {WHY}"):
        TextGenerator.load(str(models["tiny"]), device="cuda")


@pytest.mark.skipif(not _C.cuda_compiled or ops.cuda_available(), reason="needs a CUDA build on a machine without GPU")
def test_the_cuda_bindings_without_a_gpu_name_the_device():
    with pytest.raises(ValueError, match="CudaKvCache: device='cuda' but no CUDA device is visible"):
        _C.CudaKvCache(1, 1, 4, 16, 2)
    with pytest.raises(ValueError, match="cuda_mem_info: device='cuda' but no CUDA device is visible"):
        _C.cuda_mem_info()


@no_gpu
@pytest.mark.parametrize("command", [["generate", "-p", "def"], ["serve", "--port", "0"]], ids=["generate", "serve"])
def test_the_cli_on_cuda_without_a_gpu_says_why(models, command):
    result = subprocess.run(["aigc", command[0], str(models["tiny"]), *command[1:], "--device", "cuda"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert f"device='cuda': the native GPT decoder {WHY}" in result.stderr and "Traceback" not in result.stderr


def test_serve_on_cuda_over_ray_is_refused(models):
    result = subprocess.run(["aigc", "serve", str(models["tiny"]), "--ray", "--device", "cuda"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "--device cuda works without --ray only" in result.stderr, result.stderr


def test_native_lstm_on_cuda_is_refused_by_name(models):
    with pytest.raises(AigcError, match="device: the native LSTM runs on the CPU only, got 'cuda'"):
        TextGenerator.load(str(models["lstm"]), backend="native", device="cuda")


def test_int8_weights_on_cuda_are_refused_by_name(models):
    with pytest.raises(AigcError, match="dtype: the CUDA decoder stores float32 or bfloat16 weights, got 'int8'"):
        TextGenerator.load(str(models["tiny"]), backend="native", device="cuda", dtype="int8")
