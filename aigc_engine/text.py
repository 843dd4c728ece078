"""TextGenerator: prompts in, text out, from an exported GPT or LSTM language model.

Each prompt is a request with its own SamplingParams. A call runs its requests as one
batch (in groups of max_batch_size): one prefill, then one decode step at a time; a
finished request leaves the batch at once. The next token of every row comes from the
native sampler (aigc_engine.ops.sample), keyed by (the request's seed, its step), so a
request's tokens do not depend on what else shares its batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence

import numpy as np

from . import ops
from .artifact import TEXT_FAMILIES, Artifact, read_artifact
from .errors import AigcError
from .registry import resolve
from .request import Request
from .sampling import Completion, SamplingParams
from .text_backends import GptOnnx, LstmOnnx
from .tokenizer import TextTokenizer

BACKENDS = ("onnxruntime",)
DEFAULT_MAX_BATCH_SIZE = 32


class TextGenerator:
    def __init__(self, artifact: Artifact, backend: str = "onnxruntime", device: str = "cpu",
                 num_threads: int | None = None, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        if backend not in BACKENDS:
            raise AigcError(f"backend: {artifact.family} models run on {', '.join(BACKENDS)}, got {backend!r}")
        if device not in ops.DEVICES:
            raise AigcError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise AigcError(f"max_batch_size: expected an integer >= 1, got {max_batch_size!r}")
        self.artifact = artifact
        self.backend = backend
        self.device = device
        self.max_batch_size = max_batch_size
        self.tokenizer = TextTokenizer.from_json(artifact.tokenizer_json, str(artifact.path))
        self.eos_token_id = artifact.config["eos_token_id"]
        self._model = (GptOnnx if artifact.family == "gpt" else LstmOnnx)(artifact, device, num_threads)

    @classmethod
    def load(cls, name_or_path: str, backend: str = "onnxruntime", device: str = "cpu",
             num_threads: int | None = None, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> "TextGenerator":
        """An embedded model by name (`aigc models`) or a path to an exported .onnx file."""
        return cls(read_artifact(resolve(name_or_path), TEXT_FAMILIES), backend, device, num_threads, max_batch_size)

    @property
    def family(self) -> str:
        return self.artifact.family

    @property
    def context_length(self) -> int | None:
        """The most tokens (prompt + generated) a request can hold; None: no limit."""
        return self._model.context

    def __repr__(self) -> str:
        return f"TextGenerator({self.artifact.path.name!r}, family={self.family!r}, backend={self.backend!r})"

    # Public API ---------------------------------------------------------------------

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[int]],
                 params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[Completion]:
        """One Completion per prompt, in order; a prompt is a string or a list of token ids.
        A prompt that cannot run (empty, too long, not UTF-8...) gets finish_reason 'error'
        and its message; the others run."""
        requests = self._requests(prompts, params)
        runnable = [r for r in requests if r.completion.error is None]
        for start in range(0, len(runnable), self.max_batch_size):
            for _ in self._run(runnable[start:start + self.max_batch_size]):
                pass
        return [r.completion for r in requests]

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Text of one prompt as it is produced, in UTF-8-safe pieces; their concatenation
        is the completion's text. A bad prompt or parameter raises here, before iterating."""
        (request,) = self._requests([prompt], params)
        if request.completion.error is not None:
            raise AigcError(request.completion.error)

        def pieces() -> Iterator[str]:
            for _ in self._run([request]):
                piece = request.take_stream_text()
                if piece:
                    yield piece
        return pieces()

    # Internals ----------------------------------------------------------------------

    def _requests(self, prompts, params) -> list[Request]:
        if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts
                                        and isinstance(prompts[0], (int, np.integer))):
            prompts = [prompts]
        if not isinstance(prompts, Sequence) or not prompts:
            raise AigcError(f"prompts: expected a string or a non-empty list of strings, got {prompts!r}")
        if params is None:
            params = SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if not isinstance(params, Sequence) or len(params) != len(prompts):
            raise AigcError(f"params: expected one SamplingParams or one per prompt ({len(prompts)}), got {params!r}")
        for p in params:
            if not isinstance(p, SamplingParams):
                raise AigcError(f"params: expected SamplingParams, got {type(p).__name__}")
        return [self._request(prompt, p) for prompt, p in zip(prompts, params)]

    def _request(self, prompt, params: SamplingParams) -> Request:
        seed = params.seed if params.seed is not None else secrets.randbits(64)
        completion = Completion(prompt=prompt if isinstance(prompt, str) else "", seed=seed)
        try:
            if isinstance(prompt, (list, tuple, np.ndarray)):
                ids = self._check_token_ids(prompt)
                completion.prompt = self.tokenizer.decode(ids)
            else:
                ids = self.tokenizer.encode(prompt)
            ids = self._fit_context(ids, params)
            for token in params.logit_bias:
                if token >= self.tokenizer.vocab_size:
                    raise AigcError(f"logit_bias: token id {token} is outside the vocabulary (size "
                                    f"{self.tokenizer.vocab_size})")
        except AigcError as error:
            completion.error = str(error)
            completion.finish_reason = "error"
            return Request(completion, [], params, seed, self.tokenizer, self.eos_token_id)
        completion.prompt_tokens = len(ids)
        return Request(completion, ids, params, seed, self.tokenizer, self.eos_token_id)

    def _check_token_ids(self, prompt) -> list[int]:
        ids = np.asarray(prompt)
        vocab = self.artifact.config["vocab_size"]
        if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu":
            raise AigcError(f"prompt: token ids must be a non-empty list of integers, got {prompt!r:.60}")
        if ids.min() < 0 or ids.max() >= vocab:
            raise AigcError(f"prompt: token ids must lie in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}")
        return ids.tolist()

    def _fit_context(self, ids: list[int], params: SamplingParams) -> list[int]:
        context = self.context_length
        if context is None or len(ids) + params.max_new_tokens <= context:
            return ids
        room = context - params.max_new_tokens
        if params.truncate_prompt and room >= 1:
            return ids[len(ids) - room:]
        raise AigcError(f"prompt: {len(ids)} tokens + max_new_tokens {params.max_new_tokens} exceed the model's "
                        f"context of {context} tokens" +
                        ("" if params.max_new_tokens >= context else " (truncate_prompt=True keeps the last "
                                                                     f"{max(room, 0)} prompt tokens)"))

    def _run(self, requests: list[Request]) -> Iterator[None]:
        """Prefill the batch, then decode until every request has finished; yields after
        each step so that stream() can hand out text as it comes."""
        logits, state = self._model.start([r.prompt_ids for r in requests])
        active = requests
        while True:
            self._sample_into(logits, active)
            yield
            rows = [i for i, r in enumerate(active) if not r.finished]
            if not rows:
                return
            if len(rows) < len(active):
                state = self._model.keep(state, np.array(rows))
                active = [active[i] for i in rows]
            logits, state = self._model.step(state, np.array([r.last_token for r in active], np.int64))

    def _sample_into(self, logits: np.ndarray, requests: list[Request]) -> None:
        params = [r.params for r in requests]
        penalised = any(p.repetition_penalty != 1 or p.presence_penalty or p.frequency_penalty for p in params)
        history = offsets = prompt_lens = None
        if penalised:
            rows = [r.history() for r in requests]
            history = np.concatenate(rows).astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum([len(row) for row in rows])]).astype(np.int64)
            prompt_lens = np.array([len(r.prompt_ids) for r in requests], np.int64)
        bias = None
        if any(p.logit_bias for p in params):
            ids = [np.array(list(p.logit_bias), np.int64) for p in params]
            values = [np.array(list(p.logit_bias.values()), np.float32) for p in params]
            bias = (np.concatenate(ids), np.concatenate(values),
                    np.concatenate([[0], np.cumsum([len(i) for i in ids])]).astype(np.int64))
        num_logprobs = max((p.logprobs or 0) for p in params)
        result = ops.sample(
            logits,
            seeds=np.array([r.seed for r in requests], np.uint64),
            steps=np.array([len(r.generated) for r in requests], np.uint64),
            temperature=np.array([p.temperature for p in params], np.float32),
            top_k=np.array([min(p.top_k, logits.shape[1]) for p in params], np.int32),
            top_p=np.array([p.top_p for p in params], np.float32),
            min_p=np.array([p.min_p for p in params], np.float32),
            repetition_penalty=np.array([p.repetition_penalty for p in params], np.float32),
            presence_penalty=np.array([p.presence_penalty for p in params], np.float32),
            frequency_penalty=np.array([p.frequency_penalty for p in params], np.float32),
            history=history, history_offsets=offsets, prompt_lens=prompt_lens,
            logit_bias=bias, num_logprobs=num_logprobs)
        for row, request in enumerate(requests):
            request.accept(int(result.tokens[row]), float(result.logprobs[row]),
                           result.top_ids[row], result.top_logprobs[row])
