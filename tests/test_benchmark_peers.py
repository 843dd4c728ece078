"""benchmarks/ort_int8_graph.py on a tiny exported GPT: the edited graph's logits are the
original's last position, through a prompt and a cached decode step, and after
`quantize_dynamic` its head is an integer MatMul (the tied head of the export stays float).
benchmarks/text_workers.py: a worker times calls in its own process, reports the native
model's weight bytes, and fails loudly where loading imported torch."""

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_fixtures import export_tiny  # noqa: E402

BENCHMARKS = str(Path(__file__).resolve().parent.parent / "benchmarks")
sys.path.insert(0, BENCHMARKS)
import ort_int8_graph  # noqa: E402
import text_peers  # noqa: E402
import text_workers  # noqa: E402

# Only for the imports above: the folder's scripts would shadow installed modules of the same name.
sys.path[:] = [entry for entry in sys.path if entry != BENCHMARKS]

INTEGER_MATMULS = {"MatMulInteger", "DynamicQuantizeMatMul"}


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny-peers"), "gpt")[1]


def logits_of(model, prompt: np.ndarray, next_ids: np.ndarray) -> list[np.ndarray]:
    """The logits of the prompt's run and of one cached step after it."""
    session = ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    past_inputs = [i for i in session.get_inputs() if i.name.startswith("past.")]
    outputs = ["logits"] + [i.name.replace("past.", "present.") for i in past_inputs]
    batch, length = prompt.shape
    heads, head_dim = past_inputs[0].shape[1], past_inputs[0].shape[3]
    past = [np.zeros((batch, heads, 0, head_dim), np.float32)] * len(past_inputs)
    found = []
    for ids, positions, total in ((prompt, np.tile(np.arange(length), (batch, 1)), length),
                                  (next_ids, np.full((batch, 1), length), length + 1)):
        feeds = {"input_ids": ids, "position_ids": positions, "attention_mask": np.ones((batch, total), np.int64)}
        feeds.update({i.name: p for i, p in zip(past_inputs, past)})
        logits, *past = session.run(outputs, feeds)
        found.append(logits)
    return found


def test_last_position_logits_are_the_originals(tiny_gpt):
    original = onnx.load(str(tiny_gpt))
    edited = ort_int8_graph.last_position_head(original)
    rng = np.random.default_rng(0)
    prompt, next_ids = rng.integers(0, 300, (3, 7)), rng.integers(0, 300, (3, 1))
    for full, last in zip(logits_of(original, prompt, next_ids), logits_of(edited, prompt, next_ids)):
        assert last.shape == (3, 1, full.shape[2])
        np.testing.assert_allclose(last[:, -1], full[:, -1], rtol=0, atol=1e-5)
    assert not any(node.op_type == "Transpose" and node.input[0] == "transformer.wte.weight" for node in edited.graph.node)


def test_quantize_dynamic_quantizes_the_head(tiny_gpt, tmp_path):
    out = ort_int8_graph.quantize_last_position_head(tiny_gpt, tmp_path / "careful.int8.onnx")
    quantized = onnx.load(str(out))
    head = [node for node in quantized.graph.node if any(i.startswith(ort_int8_graph.HEAD) for i in node.input)]
    assert any(node.op_type in INTEGER_MATMULS for node in head), [node.op_type for node in head]
    assert ort_int8_graph.HEAD not in {t.name for t in quantized.graph.initializer}  # no float copy left
    assert list(tmp_path.iterdir()) == [out]  # the float intermediate is removed
    # As exported, the tied head is not an initializer's MatMul: quantize_dynamic leaves it float.
    stock = tmp_path / "stock.int8.onnx"
    quantization.quantize_dynamic(str(tiny_gpt), str(stock), weight_type=quantization.QuantType.QInt8)
    logits = ort_int8_graph.producer(onnx.load(str(stock)).graph, "logits")
    assert logits.op_type == "MatMul"


def test_a_worker_times_its_calls_and_keeps_torch_out(tiny_gpt, monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)  # the spawned workers import their factories from there
    specs = {"aigc-native-float32": (text_peers.aigc_engine, (tiny_gpt, "native", "float32", 2), False),
             "absent": (print, ("  absent: skipped (a factory that returns None)",), False)}
    with text_workers.workers(specs, threads=1) as found:
        assert list(found) == ["aigc-native-float32"]
        worker = found["aigc-native-float32"]
        assert worker.loaded["weight_bytes"] > 0 and worker.process.pid != os.getpid()
        assert 0 < worker.seconds([[1, 2, 3], [4, 5, 6]], 3) < 60
    assert not worker.process.is_alive()
    with pytest.raises(RuntimeError, match="imported torch"):
        with text_workers.workers({"importer": (importlib.import_module, ("torch",), False)}, threads=1):
            pass


def test_the_native_peer_passes_its_kv_dtype_on(tiny_gpt):
    # text.py's "-kv-bf16" rows: the same weights with the KV cache in bf16.
    from aigc_engine import AigcError

    run = text_peers.aigc_engine(tiny_gpt, "native", "int8", 2, "cpu", "bfloat16")
    run([[1, 2, 3], [4, 5, 6]], 3)
    with pytest.raises(AigcError, match="kv_dtype: expected one of .*'float16'"):
        text_peers.aigc_engine(tiny_gpt, "native", "int8", 2, "cpu", "float16")
