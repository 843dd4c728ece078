"""onnxruntime sessions as aigc_engine configures them.

Threads come from AIGC_NUM_THREADS (default: onnxruntime's own choice, one per
physical core); all graph optimisations on; onnxruntime's warnings kept quiet.
"""

from __future__ import annotations

import os

import onnx
import onnxruntime as ort

from ..errors import AigcError


def num_threads_from_env() -> int | None:
    value = os.environ.get("AIGC_NUM_THREADS")
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) < 1:
        raise AigcError(f"AIGC_NUM_THREADS: expected a positive integer, got {value!r}")
    return int(value)


def providers_for(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise AigcError("device='cuda': this onnxruntime has no CUDA provider "
                            "(install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise AigcError(f"device: expected 'cpu' or 'cuda', got {device!r}")


def create_session(model: onnx.ModelProto, device: str = "cpu",
                   num_threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    threads = num_threads if num_threads is not None else num_threads_from_env()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers_for(device))
