"""Text models on onnxruntime: a batch of prompts in, next-token logits out, step by step.

GptOnnx runs the KV-cache graph (inputs input_ids, position_ids, attention_mask,
past.{i}.key/value; outputs logits, present.{i}.key/value): prompts of different
lengths are left-padded and masked, so one prefill serves the whole batch. LstmOnnx
runs the recurrent graph (past.h/c → present.h/c); padding would enter its state, so
each prompt is read alone and the states are stacked for the batched decode.
Every backend has the same three calls: start(prompts), step(state, tokens), keep(state, rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..artifacts.artifact import Artifact
from ..artifacts.schema import (
    GPT_INPUTS,
    LOGITS,
    LSTM_INPUTS,
    LSTM_OUTPUTS,
    gpt_past_names,
    gpt_present_names,
)
from ..artifacts.session import create_session


@dataclass
class GptState:
    past: list[np.ndarray]   # 2 × n_layer arrays (B, n_head, P, head_dim): key, value per layer
    mask: np.ndarray         # int64 (B, P): 1 = a real token, 0 = left padding
    positions: np.ndarray    # int64 (B,): position of each row's next token


class GptOnnx:
    def __init__(self, artifact: Artifact, device: str, num_threads: int | None):
        config = artifact.config
        self.n_layer = config["n_layer"]
        self.n_head = config["n_head"]
        self.head_dim = config["n_embd"] // config["n_head"]
        self.context = config["n_positions"]
        self._session = create_session(artifact.model, device, num_threads)
        self._past_names = gpt_past_names(self.n_layer)
        self._outputs = [LOGITS] + gpt_present_names(self.n_layer)

    def start(self, prompts: list[list[int]]) -> tuple[np.ndarray, GptState]:
        """Prefill: logits float32 (B, vocab) of each prompt's last token, and the state."""
        batch, longest = len(prompts), max(len(p) for p in prompts)
        ids = np.zeros((batch, longest), np.int64)
        mask = np.zeros((batch, longest), np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt):] = prompt
            mask[row, longest - len(prompt):] = 1
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        empty = np.zeros((batch, self.n_head, 0, self.head_dim), np.float32)
        state = GptState([empty] * (2 * self.n_layer), np.zeros((batch, 0), np.int64), positions[:, -1])
        return self._run(state, ids, positions, mask)

    def step(self, state: GptState, tokens: np.ndarray) -> tuple[np.ndarray, GptState]:
        """One new token per row → logits float32 (B, vocab) and the state after it."""
        ids = tokens.astype(np.int64).reshape(-1, 1)
        return self._run(state, ids, state.positions.reshape(-1, 1), np.ones_like(ids))

    def keep(self, state: GptState, rows: np.ndarray) -> GptState:
        return GptState([p[rows] for p in state.past], state.mask[rows], state.positions[rows])

    def prompt_logits(self, ids: list[int]) -> Iterator[np.ndarray]:
        """Logits float32 (len(ids) - 1, vocab): row j after ids[:j + 1] (one run of the graph)."""
        if len(ids) < 2:
            return
        tokens = np.array([ids[:-1]], np.int64)
        empty = np.zeros((1, self.n_head, 0, self.head_dim), np.float32)
        feeds = dict(zip(GPT_INPUTS, (tokens, np.arange(tokens.shape[1], dtype=np.int64)[None], np.ones_like(tokens))))
        feeds.update(zip(self._past_names, [empty] * (2 * self.n_layer)))
        yield self._session.run([LOGITS], feeds)[0][0]

    def _run(self, state: GptState, ids: np.ndarray, positions: np.ndarray,
             new_mask: np.ndarray) -> tuple[np.ndarray, GptState]:
        mask = np.concatenate([state.mask, new_mask], axis=1)
        feeds = dict(zip(GPT_INPUTS, (ids, positions, mask)))
        feeds.update(zip(self._past_names, state.past))
        logits, *present = self._session.run(self._outputs, feeds)
        after = GptState(present, mask, positions[:, -1] + 1)
        return np.ascontiguousarray(logits[:, -1, :]), after


@dataclass
class LstmState:
    h: np.ndarray  # float32 (n_layer, B, hidden)
    c: np.ndarray


# An LSTM reads text of any length, but its graph returns logits at every prompt position
# and onnxruntime holds them all: a 720 KB prompt once took 16 s and 4.5 GB before failing.
# Prompt + new tokens are bounded as a Transformer's context is.
LSTM_MAX_CONTEXT = 4096


class LstmOnnx:
    context = LSTM_MAX_CONTEXT

    def __init__(self, artifact: Artifact, device: str, num_threads: int | None):
        config = artifact.config
        self._shape = (config["n_layer"], 1, config["hidden_size"])
        self._session = create_session(artifact.model, device, num_threads)

    def start(self, prompts: list[list[int]]) -> tuple[np.ndarray, LstmState]:
        logits, hs, cs = [], [], []
        for prompt in prompts:
            zeros = np.zeros(self._shape, np.float32)
            out, h, c = self._run(np.array([prompt], np.int64), zeros, zeros)
            logits.append(out)
            hs.append(h)
            cs.append(c)
        return np.concatenate(logits), LstmState(np.concatenate(hs, axis=1), np.concatenate(cs, axis=1))

    def step(self, state: LstmState, tokens: np.ndarray) -> tuple[np.ndarray, LstmState]:
        logits, h, c = self._run(tokens.astype(np.int64).reshape(-1, 1), state.h, state.c)
        return logits, LstmState(h, c)

    def keep(self, state: LstmState, rows: np.ndarray) -> LstmState:
        return LstmState(np.ascontiguousarray(state.h[:, rows]), np.ascontiguousarray(state.c[:, rows]))

    def prompt_logits(self, ids: list[int]) -> Iterator[np.ndarray]:
        """Logits float32 (len(ids) - 1, vocab): row j after ids[:j + 1] (one run of the graph)."""
        if len(ids) < 2:
            return
        zeros = np.zeros(self._shape, np.float32)
        yield self._session.run([LSTM_OUTPUTS[0]], dict(zip(LSTM_INPUTS, (np.array([ids[:-1]], np.int64), zeros,
                                                                           zeros))))[0][0]

    def _run(self, ids, h, c):
        logits, h, c = self._session.run(list(LSTM_OUTPUTS), dict(zip(LSTM_INPUTS, (ids, h, c))))
        return np.ascontiguousarray(logits[:, -1, :]), h, c
