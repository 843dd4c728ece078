"""The CUDA sampler's kernel source run on the CPU, against the CPU sampler, so that it is
exercised on machines without a GPU: tests/cuda_sim builds csrc/cuda/sampling_kernels.cuh
with g++, each CUDA block simulated by 256 threads (barriers for __syncthreads and
__syncwarp, slots for shuffles, IEEE host intrinsics). It checks the kernels' logic and
arithmetic — the same tokens, errors and top ids as the CPU build it reproduces, under
every ISA this CPU has — not nvcc's code generation, which only tests/test_cuda_sampling.py
on a GPU does. Skipped without a C++20 g++.
"""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import isa
import test_cuda_sampling as cases
from aigc_engine import ops

ROOT = Path(__file__).resolve().parent.parent
# (width, fused multiply-adds, halving lane sum) of each CPU build: cuda::cpu_arithmetic.
ARITHMETIC = {"generic": (8, 0, 0), "avx2": (8, 1, 1), "avx512": (16, 1, 1)}
MESSAGES = {1: "has NaN", 2: "has +inf", 3: "is all -inf", 4: "has every token at -inf after logit_bias",
            5: "has NaN at token {} after logit_bias and penalties",
            6: "has +inf at token {} after logit_bias and penalties"}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None or not (ROOT / "csrc").is_dir():
        pytest.skip("needs g++ and the source tree's csrc/")
    library = tmp_path_factory.mktemp("cuda_sim") / "libsim.so"
    build = subprocess.run([compiler, "-O1", "-std=c++20", "-ffp-contract=off", "-fPIC", "-shared",
                            f"-I{ROOT / 'tests/cuda_sim/include'}", f"-I{ROOT / 'csrc'}",
                            str(ROOT / "tests/cuda_sim/sim.cc"), "-o", str(library), "-lpthread"],
                           capture_output=True, text=True)
    if build.returncode != 0 and "barrier" in build.stderr:
        pytest.skip("g++ without C++20's <barrier>")
    assert build.returncode == 0, build.stderr
    return ctypes.CDLL(str(library))


def history_csr(kwargs, batch):
    """TokenCounts of every row as CSR: distinct tokens ascending, their generated counts."""
    if kwargs.get("history") is None:
        return None, None, None
    history, offsets, prompt_lens = kwargs["history"], kwargs["history_offsets"], kwargs.get("prompt_lens")
    tokens, generated, csr = [], [], [0]
    for r in range(batch):
        row = history[offsets[r]:offsets[r + 1]]
        generated_part = row[0 if prompt_lens is None else prompt_lens[r]:]
        distinct = np.unique(row)
        tokens += distinct.tolist()
        generated += [int(np.count_nonzero(generated_part == t)) for t in distinct]
        csr.append(len(tokens))
    return np.array(tokens, np.int32), np.array(generated, np.int32), np.array(csr, np.int64)


def simulate(library, logits, kwargs, isa_name, num_logprobs, edits_first, want_logprobs):
    batch, vocab = logits.shape
    pointer = lambda a: None if a is None else a.ctypes.data_as(ctypes.c_void_p)
    per_row = [np.ascontiguousarray(np.broadcast_to(np.asarray(kwargs[name], dtype), (batch,)))
               for name, dtype in [("seeds", np.uint64), ("steps", np.uint64), ("temperature", np.float32),
                                   ("top_k", np.int32), ("top_p", np.float32), ("min_p", np.float32),
                                   ("repetition_penalty", np.float32), ("presence_penalty", np.float32),
                                   ("frequency_penalty", np.float32)]]
    bias = kwargs.get("logit_bias") or (None, None, None)
    tokens, logprobs = np.zeros(batch, np.int64), np.full(batch, np.nan, np.float32)
    top_ids, top_logprobs = np.zeros((batch, num_logprobs), np.int64), np.zeros((batch, num_logprobs), np.float32)
    status = np.zeros((batch, 2), np.int32)
    library.sim_sample(pointer(logits), ctypes.c_int64(batch), ctypes.c_int64(vocab), *map(pointer, per_row),
                       *map(pointer, history_csr(kwargs, batch)), *map(pointer, bias), int(edits_first),
                       *ARITHMETIC[isa_name], num_logprobs, pointer(tokens),
                       pointer(logprobs) if want_logprobs else None, pointer(top_ids), pointer(top_logprobs),
                       pointer(status))
    errors = {r: f"logits: row {r} " + MESSAGES[code].format(token) for r, (code, token) in enumerate(status) if code}
    return ops.SampleResult(tokens, logprobs, top_ids, top_logprobs, errors)


def check(library, logits, kwargs, isa_name, num_logprobs, scratch=False):
    """scratch: the logits handed over as scratch and no log-probability wanted, so that
    the CPU edits in place (sample_cuda's edits_first then)."""
    batch, vocab = logits.shape
    with isa.forced(isa_name):
        cpu = ops.Sampler(batch, vocab, **kwargs, num_logprobs=num_logprobs, logprobs=not scratch,
                          overwrite_logits=scratch)(logits.copy())
    edits_first = scratch and num_logprobs == 0
    cuda = simulate(library, logits, kwargs, isa_name, num_logprobs, edits_first, not scratch)
    cases.assert_same(cpu, cuda, logits, isa_name)


@isa.EACH
@pytest.mark.parametrize("seed", range(4))
def test_simulated_kernels_draw_the_cpu_tokens(simulated, isa_name, seed):
    rng = np.random.default_rng(seed)
    for _ in range(3):
        batch, vocab = int(rng.integers(1, 7)), int(rng.choice([1, 7, 64, 65, 129, 300, 1000, 4097, 50257]))
        logits = (rng.standard_normal((batch, vocab)) * rng.choice([0.1, 3.0, 30.0])).astype(np.float32)
        if rng.integers(0, 3) == 0:
            logits = np.round(logits)  # ties
        cases.spoil_rows(rng, logits)
        kwargs = cases.row_params(rng, batch, vocab)
        if rng.integers(0, 2):
            kwargs.update(cases.histories_and_bias(rng, logits))
        check(simulated, logits, kwargs, isa_name, int(min(rng.choice([0, 3, 20]), vocab)),
              scratch=bool(rng.integers(0, 4) == 0))


@isa.EACH
@pytest.mark.parametrize("vocab, row", [(129, "normal"), (4097, "grid"), (1000, "flat")])
def test_simulated_kernels_over_many_steps(simulated, isa_name, vocab, row):
    """One row drawn at 32 steps per configuration: the kept sets and sums show in the tokens."""
    rng = np.random.default_rng(vocab)
    values = {"normal": rng.standard_normal(vocab) * 2, "grid": np.round(rng.standard_normal(vocab) * 4) / 2,
              "flat": np.zeros(vocab)}[row]
    batch = 32
    logits = np.repeat(values[None].astype(np.float32), batch, axis=0)
    for temperature, top_k, top_p, min_p in [(0.8, 50, 0.9, 0.0), (1.0, 0, 0.9, 0.0), (1.3, 0, 1.0, 0.02),
                                             (1.0, 0, 1.0, 0.0), (2.0, 100, 0.5, 0.01), (1.0, 300, 0.95, 0.0)]:
        kwargs = dict(seeds=np.full(batch, 7, np.uint64), steps=np.arange(batch, dtype=np.uint64),
                      temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=1.0,
                      presence_penalty=0.0, frequency_penalty=0.0)
        check(simulated, logits, kwargs, isa_name, 2)
