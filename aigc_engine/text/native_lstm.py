"""The native backend of LSTM models: the C++ LSTM (aigc_engine._C.LstmModel) and its state
slots (LstmState), loaded from the same ONNX file onnxruntime runs, under the same
continuous batch and sampler as the GPT (scheduler.py).

The weights are the file's initializers by their torch names (embedding.weight,
lstm.weight_ih_l{i}, lstm.weight_hh_l{i}, lstm.bias_ih_l{i}, lstm.bias_hh_l{i}, head.weight,
head.bias), converted once to the chosen dtype as the GPT's are. Each running sequence
holds one state slot (h and c of every layer); there is a slot for every row of the
batch, so nothing is ever preempted.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from onnx import numpy_helper

from .. import _C
from ..artifacts.artifact import Artifact
from ..artifacts.schema import WEIGHT_DTYPES as DTYPES
from ..artifacts.weights import lstm_weight_shapes
from ..errors import AigcError, ModelFileError
from ..images.memory import check_fits
from .backends import LSTM_MAX_CONTEXT


class NativeLstm:
    context = LSTM_MAX_CONTEXT

    def __init__(self, artifact: Artifact, dtype: str = "float32", max_batch_size: int = 32):
        if dtype not in DTYPES:
            raise AigcError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        config = artifact.config
        # h and c of every layer per slot: a huge max_batch_size fails here, not as std::bad_alloc.
        check_fits(f"max_batch_size={max_batch_size} (the LSTM's state slots)",
                   max_batch_size * 2 * config["n_layer"] * config["hidden_size"] * 4)
        self.config = config
        self.dtype = dtype
        self.vocab_size = config["vocab_size"]
        names = lstm_weight_shapes(config)
        weights = {t.name: np.ascontiguousarray(numpy_helper.to_array(t), dtype=np.float32)
                   for t in artifact.model.graph.initializer if t.name in names}
        sizes = {key: config[key] for key in ("vocab_size", "n_embd", "hidden_size", "n_layer")}
        try:
            self.model = _C.LstmModel({**sizes, "context": self.context}, weights, dtype)
        except ValueError as error:
            raise ModelFileError(f"{artifact.path}: cannot build the native LSTM ({error})") from None
        except MemoryError:
            raise AigcError(f"{artifact.path}: not enough memory for the native LSTM's {dtype} weights") from None
        del weights
        # Before the onnxruntime graph could need them: this backend has its own copy.
        artifact.model.graph.ClearField("initializer")
        self.cache = self._state(max_batch_size)

    def blocks_for(self, tokens: int) -> int:
        return 1  # a state slot holds a sequence of any length up to the context

    def _state(self, slots: int):
        return _C.LstmState(self.config["n_layer"], self.config["hidden_size"], self.context, slots)

    def prompt_logits(self, ids: list[int], chunk: int = 64) -> Iterator[np.ndarray]:
        """Logits float32 (rows, vocab) after each prefix of `ids` but the whole, in chunks of
        rows: row j predicts ids[j + 1]. One prompt run over a state slot of its own (the
        serving slots stay untouched); call it where no step runs (the model runs one at a time)."""
        count = len(ids) - 1
        if count < 1:
            return
        state = self._state(1)
        logits = np.empty((count, self.vocab_size), np.float32)
        self.model.forward(np.array(ids[:count], np.int64), np.arange(count, dtype=np.int64),
                           np.array([0, count], np.int32), np.array([count], np.int32), np.ones(1, np.uint8),
                           np.array([state.allocate(1)], np.int32), state, logits, every_token=True)
        for start in range(0, count, chunk):
            yield logits[start:start + chunk]
