"""The native backend of GPT models: the C++ decoder (aigc_engine._C.GptModel) and its
paged KV cache, loaded from the same ONNX file onnxruntime runs.

The weights are the file's initializers, found by their GPT-2 names; the decoder
converts them once to the chosen dtype (float32; bfloat16; or int8 with a scale per
output channel, the activations quantised per row at run time) and the in-memory copy of
the file drops them. The KV cache is one pool of blocks sized by kv_cache_mb, its keys
and values stored as kv_dtype: float32, or bfloat16 (rounded to nearest even; half the
bytes, so twice the blocks for the same budget).

device="cuda" runs the same decoder on the GPU (_C.CudaGptModel, csrc/cuda/gpt.h): the
weights (float32 or bfloat16) and the KV cache in device memory, the logits copied back
for the host's sampler. Its float32 projections need cuBLAS, from the nvidia-cublas wheel
(the `gpu` extra), preloaded here so that the extension's dlopen finds it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from .. import _C, ops
from ..artifacts.artifact import Artifact
from ..artifacts.schema import WEIGHT_DTYPES as DTYPES
from ..errors import AigcError, ModelFileError
from ..images.memory import check_fits

BLOCK_SIZE = 16  # tokens per KV block: small enough to waste little, large enough to stream
DEFAULT_KV_CACHE_MB = 512
KV_DTYPES = {"float32": 4, "bfloat16": 2}  # bytes per stored key or value element
CUDA_DTYPES = ("float32", "bfloat16")  # int8 weights are the CPU decoder's only
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2}


def preload_cublas() -> None:
    """Loads the nvidia-cublas wheel's libcublas.so.13 (if installed) with RTLD_GLOBAL, so the
    extension's dlopen by soname finds it; without the wheel a system libcublas may still do."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        library = Path(root) / "cu13" / "lib" / "libcublas.so.13"
        if library.is_file():
            try:
                ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            except OSError as error:
                raise AigcError(f"cuBLAS: cannot load {library} ({error}); reinstall nvidia-cublas") from None
            return


def _check_device_memory(config: dict, dtype: str, kv_cache_mb: float, kv_bytes: int) -> None:
    """The KV cache and the weights against the device's free memory, before either is made."""
    c, vocab = config["n_embd"], config["vocab_size"]
    # Projections and the transposed head in `dtype`; the embeddings float32.
    weights = ((config["n_layer"] * 12 * c * c + vocab * c) * WEIGHT_BYTES[dtype]
               + (vocab + config["n_positions"]) * c * 4)
    free, _ = _C.cuda_mem_info()
    if kv_bytes + weights > free:
        raise AigcError(f"kv_cache_mb={kv_cache_mb:g}: the KV cache ({kv_bytes / 2**30:.2f} GiB) and the "
                        f"{dtype} weights ({weights / 2**30:.2f} GiB) need more than the {free / 2**30:.2f} GiB "
                        "free on the CUDA device")


class NativeGpt:
    def __init__(self, artifact: Artifact, dtype: str = "float32", kv_cache_mb: float = DEFAULT_KV_CACHE_MB,
                 kv_dtype: str = "float32", device: str = "cpu"):
        if dtype not in DTYPES:
            raise AigcError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        if device not in ops.DEVICES:
            raise AigcError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and dtype not in CUDA_DTYPES:
            raise AigcError(f"dtype: the CUDA decoder stores {' or '.join(CUDA_DTYPES)} weights, got {dtype!r} "
                            "(int8 is the CPU decoder's)")
        if device == "cuda":
            ops.require_cuda("the native GPT decoder")
        if not isinstance(kv_dtype, str) or kv_dtype not in KV_DTYPES:
            raise AigcError(f"kv_dtype: expected one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
        if (isinstance(kv_cache_mb, bool) or not isinstance(kv_cache_mb, (int, float)) or not kv_cache_mb > 0
                or not math.isfinite(kv_cache_mb)):
            raise AigcError(f"kv_cache_mb: expected a finite number > 0, got {kv_cache_mb!r}")
        config = artifact.config
        # Before the weights are copied: a cache that cannot fit fails at once, not after a
        # half-GB conversion, and never as std::bad_alloc.
        block_bytes = 2 * config["n_layer"] * BLOCK_SIZE * config["n_embd"] * KV_DTYPES[kv_dtype]
        num_blocks = int(kv_cache_mb * 2**20 // block_bytes)
        if num_blocks < 1:
            raise AigcError(f"kv_cache_mb: {kv_cache_mb} MB holds no block of {BLOCK_SIZE} tokens "
                            f"({block_bytes / 2**20:.2f} MB each for this model)")
        if device == "cuda":
            _check_device_memory(config, dtype, kv_cache_mb, num_blocks * block_bytes)
            preload_cublas()
        else:
            check_fits(f"kv_cache_mb={kv_cache_mb:g} (the KV cache)", num_blocks * block_bytes)
        self.device = device
        self._model_class, self._cache_class = ((_C.CudaGptModel, _C.CudaKvCache) if device == "cuda"
                                                else (_C.GptModel, _C.KvCache))
        self.config = config
        self.dtype = dtype
        self.kv_dtype = kv_dtype
        self.context = config["n_positions"]
        self.vocab_size = config["vocab_size"]
        weights = {t.name: numpy_helper.to_array(t) for t in artifact.model.graph.initializer
                   if t.name.startswith("transformer.")}
        weights = {name: np.ascontiguousarray(w, dtype=np.float32) for name, w in weights.items()}
        try:
            self.model = self._model_class(config, weights, dtype)
        except ValueError as error:
            raise ModelFileError(f"{artifact.path}: cannot build the native decoder ({error})") from None
        except MemoryError:
            raise AigcError(f"{artifact.path}: not enough memory for the native decoder's {dtype} weights") from None
        except RuntimeError as error:  # CUDA: out of device memory, or no cuBLAS
            raise AigcError(f"{artifact.path}: cannot build the native decoder on CUDA ({error})") from None
        # The decoder holds its own copy: drop the file's (half a GB for a GPT-2-small).
        del weights
        artifact.model.graph.ClearField("initializer")
        head_dim = config["n_embd"] // config["n_head"]
        try:
            self.cache = self._cache_class(config["n_layer"], config["n_head"], head_dim, BLOCK_SIZE, num_blocks,
                                           kv_dtype)
        except (MemoryError, RuntimeError):  # RuntimeError: cudaMalloc's
            raise AigcError(f"kv_cache_mb: cannot allocate a KV cache of {kv_cache_mb:g} MB "
                            f"({num_blocks} blocks of {block_bytes / 2**20:.2f} MB): not enough "
                            f"{'device ' if device == 'cuda' else ''}memory") from None

    @property
    def block_size(self) -> int:
        return BLOCK_SIZE

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // BLOCK_SIZE)

    def prompt_logits(self, ids: list[int], chunk: int = 64) -> Iterator[np.ndarray]:
        """Logits float32 (rows, vocab) after each prefix of `ids` but the whole, in chunks of
        rows: row j predicts ids[j + 1]. Every token runs as a one-token decode row over a
        KV cache of its own (the serving cache stays untouched): a step writes all its rows'
        keys and values before any row attends, so row j sees exactly ids[:j + 1]. Call it
        where no step runs (the Engine's thread between steps): the model runs one at a time."""
        count = len(ids) - 1
        if count < 1:
            return
        config = self.config
        blocks = self.blocks_for(count)
        cache = self._cache_class(config["n_layer"], config["n_head"], config["n_embd"] // config["n_head"],
                                  BLOCK_SIZE, blocks, self.kv_dtype)
        table = np.array(cache.allocate(blocks), np.int32)
        tokens = np.array(ids[:count], np.int64)
        for start in range(0, count, chunk):
            rows = min(chunk, count - start)
            logits = np.empty((rows, self.vocab_size), np.float32)
            self.model.forward(tokens[start:start + rows], np.arange(start, start + rows, dtype=np.int64),
                               np.arange(rows + 1, dtype=np.int32),
                               np.arange(start + 1, start + rows + 1, dtype=np.int32), np.zeros(rows, np.uint8),
                               np.ascontiguousarray(np.broadcast_to(table, (rows, blocks))), cache, logits)
            yield logits
