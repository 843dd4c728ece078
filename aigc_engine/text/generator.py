"""TextGenerator: prompts in, text out, from an exported GPT or LSTM language model.

Each prompt is a request with its own SamplingParams. Two backends, each driven by its
scheduler through the same add / cancel / step face:
- "native" (the GPT's default; the LSTM's on request): the C++ decoder with a paged KV
  cache (GPT; on the CPU, or on a GPU with device="cuda"), or the C++ LSTM with a state
  slot per sequence (native_lstm.py), and continuous batching (scheduler.py): requests join and leave at every step, and a step
  — forward pass and sampling — is one call into C++;
- "onnxruntime" (GPT and LSTM; the LSTM's default): the exported graph in static batches
  of up to max_batch_size (static.py): one prefill, then one decode step at a time,
  finished requests leaving the batch at once, the logits sampled by batch_sampler.py.
Either way the next token of every row comes from the native sampler, keyed by (the
request's seed, its step), so a request's tokens do not depend on what
else shares its batch. A row that fails (logits that turn NaN or +inf) fails its own
request only. Several threads may share a TextGenerator: their calls take turns step by
step (on the native backend they share the batch); services with many callers use
aigc_engine.Engine, which batches them without the turns. After any exception —
KeyboardInterrupt included — the generator is as before the call: the call's requests
have left the batch and freed their KV blocks. chat() and chat_stream() answer chat
messages through the model's chat template (chat_template.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import ops
from ..artifacts.artifact import TEXT_FAMILIES, Artifact, read_artifact
from ..artifacts.registry import resolve
from ..artifacts.schema import PROMPT_PREFIX_LIMIT
from ..errors import AigcError, ModelFileError, shown
from .backends import GptOnnx, LstmOnnx
from .chat_template import model_chat_template
from .healing import heal
from .native import DEFAULT_KV_CACHE_MB, NativeGpt
from .native_lstm import NativeLstm
from .request import Request
from .sampling import Completion, SamplingParams
from .scheduler import ContinuousScheduler, failure_message
from .static import StaticScheduler
from .tokenizer import TextTokenizer

# The first is the default (README, "The native LSTM": native is the faster at every batch),
# except for an LSTM on CUDA, which only onnxruntime runs.
BACKENDS = {"gpt": ("native", "onnxruntime"), "lstm": ("native", "onnxruntime")}
DEFAULT_MAX_BATCH_SIZE = 32


class TextGenerator:
    def __init__(self, artifact: Artifact, backend: str | None = None, device: str = "cpu",
                 num_threads: int | None = None, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 dtype: str = "float32", kv_cache_mb: float = DEFAULT_KV_CACHE_MB, kv_dtype: str = "float32",
                 chat_template: str | Path | None = None):
        backends = BACKENDS[artifact.family]
        if backend is None:  # the native LSTM runs on the CPU only: on CUDA, onnxruntime runs it
            backend = "onnxruntime" if artifact.family == "lstm" and device == "cuda" else backends[0]
        if backend not in backends:
            raise AigcError(f"backend: {artifact.family} models run on {', '.join(backends)}, got {backend!r}")
        if backend == "onnxruntime" and dtype != "float32":
            raise AigcError(f"dtype: the onnxruntime backend runs the file's float32 weights, got {dtype!r} "
                            "(bfloat16 and int8 are the native backend's)")
        if backend == "onnxruntime" and kv_dtype != "float32":
            raise AigcError(f"kv_dtype: the onnxruntime backend has no paged KV cache to store in {kv_dtype!r} "
                            "(kv_dtype is the native backend's)")
        if artifact.family == "lstm" and kv_dtype != "float32":
            raise AigcError(f"kv_dtype: an LSTM has no KV cache to store in {kv_dtype!r} (kv_dtype is the native "
                            "GPT decoder's)")
        if device not in ops.DEVICES:
            raise AigcError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        if backend == "native" and artifact.family == "lstm" and device != "cpu":
            raise AigcError(f"device: the native LSTM runs on the CPU only, got {device!r} (its onnxruntime "
                            "backend runs on CUDA)")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise AigcError(f"max_batch_size: expected an integer >= 1, got {max_batch_size!r}")
        self.artifact = artifact
        self.backend = backend
        self.device = device
        self.max_batch_size = max_batch_size
        self.tokenizer = TextTokenizer.from_json(artifact.tokenizer_json, str(artifact.path))
        self.eos_token_id = artifact.config["eos_token_id"]
        self.vocab_size = artifact.config["vocab_size"]  # the model's: a tokenizer may know more ids
        self.prompt_prefix_ids = _prompt_prefix_ids(artifact, self.tokenizer, self.vocab_size)
        self.chat_template = model_chat_template(artifact.chat_template, self.tokenizer.id_to_token(self.eos_token_id),
                                                 str(artifact.path), chat_template)
        # Held for one step at a time (never while a stream's consumer has the text), so
        # callers on several threads take turns. Reentrant: a stream dropped mid-step by the
        # garbage collector cancels its request from the same thread.
        self._lock = threading.RLock()
        if backend == "native":
            self._model = (NativeGpt(artifact, dtype, kv_cache_mb, kv_dtype, device) if artifact.family == "gpt"
                           else NativeLstm(artifact, dtype, max_batch_size))
            self.scheduler = ContinuousScheduler(self._model, max_batch_size)
        else:
            self._model = (GptOnnx if artifact.family == "gpt" else LstmOnnx)(artifact, device, num_threads)
            self.scheduler = StaticScheduler(self._model, max_batch_size)

    @classmethod
    def load(cls, name_or_path: str, backend: str | None = None, device: str = "cpu",
             num_threads: int | None = None, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
             dtype: str = "float32", kv_cache_mb: float = DEFAULT_KV_CACHE_MB,
             kv_dtype: str = "float32", chat_template: str | Path | None = None) -> "TextGenerator":
        """An embedded model by name (`aigc models`) or a path to an exported .onnx file.
        backend: "native" (the default; GPT and LSTM) or "onnxruntime"; device: "cpu" or
        "cuda" (the native GPT decoder on the GPU, or onnxruntime's CUDA provider); dtype: how the
        native backend stores the weights (float32, bfloat16, int8); kv_cache_mb: the GPT's KV
        cache budget (requests wait, or are preempted and recomputed, when it is full);
        kv_dtype: how that cache stores keys and values (float32, or bfloat16: twice the
        tokens per MB, half the bytes each decode step's attention reads); chat_template: a
        Jinja file that replaces the model's chat template (see chat())."""
        return cls(read_artifact(resolve(name_or_path), TEXT_FAMILIES), backend, device, num_threads, max_batch_size,
                   dtype, kv_cache_mb, kv_dtype, chat_template)

    @property
    def family(self) -> str:
        return self.artifact.family

    @property
    def context_length(self) -> int | None:
        """The model's context: the most tokens (prompt prefix + prompt + generated) a request
        can hold (an LSTM's is a set bound)."""
        return self._model.context

    @property
    def request_room(self) -> int | None:
        """The most tokens a request's own prompt and completion can hold: the context less the
        file's prompt prefix."""
        return None if self.context_length is None else self.context_length - len(self.prompt_prefix_ids)

    def __repr__(self) -> str:
        return f"TextGenerator({self.artifact.path.name!r}, family={self.family!r}, backend={self.backend!r})"

    # Public API ---------------------------------------------------------------------

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[int]],
                 params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[Completion]:
        """One Completion per prompt, in order; a prompt is a string or a list of token ids.
        A prompt that cannot run (empty, too long, not UTF-8...) gets finish_reason 'error'
        and its message; the others run."""
        requests = self._requests(prompts, params)
        with contextlib.closing(self._run([r for r in requests if r.completion.error is None])) as steps:
            for _ in steps:
                pass
        return [r.completion for r in requests]

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Text of one prompt as it is produced, in UTF-8-safe pieces; their concatenation
        is the completion's text. A bad prompt or parameter raises here, before iterating."""
        (request,) = self._requests([prompt], params)
        if request.completion.error is not None:
            raise AigcError(request.completion.error)

        def pieces() -> Iterator[str]:
            with contextlib.closing(self._run([request])) as steps:  # leaving early cancels the request
                for _ in steps:
                    piece = request.take_stream_text()
                    if piece:
                        yield piece
            if request.completion.error is not None:
                raise AigcError(request.completion.error)
        return pieces()

    def chat(self, messages: list[dict], params: SamplingParams | None = None) -> Completion:
        """The assistant's reply to OpenAI-style messages ([{"role": "user", "content": "Hi"}]):
        the completion of the prompt that self.chat_template renders from them, with the
        template's stop strings added to params. Bad messages raise AigcError naming them."""
        return self.generate(*self.chat_request(messages, params))[0]

    def chat_stream(self, messages: list[dict], params: SamplingParams | None = None) -> Iterator[str]:
        """chat(), its text streamed as stream() does."""
        return self.stream(*self.chat_request(messages, params))

    def chat_request(self, messages: list[dict], params: SamplingParams | None = None) -> tuple[str, SamplingParams]:
        """(the prompt, the params) chat() generates from."""
        return self.chat_template.render(messages), self.chat_template.with_stops(params or SamplingParams())

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
        seed = params.seed if params.seed is not None else ops.fresh_seed()
        completion = Completion(prompt=prompt if isinstance(prompt, str) else "", seed=seed)
        try:
            if isinstance(prompt, (list, tuple, np.ndarray)):
                ids = self._check_token_ids(prompt)
                completion.prompt = self.tokenizer.decode(ids)
            else:
                ids = self.tokenizer.encode(prompt)
            self._check_in_vocab("prompt", ids)
            self._check_in_vocab("logit_bias", params.logit_bias)
            healing = None
            if params.token_healing and isinstance(prompt, str):
                ids, healing = heal(ids, params.logit_bias, self.tokenizer, self.vocab_size)
            ids = self._fit_context(ids, params)
        except AigcError as error:
            completion.error = str(error)
            completion.finish_reason = "error"
            return Request(completion, [], params, seed, self.tokenizer, self.eos_token_id)
        completion.prompt_tokens = len(ids)
        return Request(completion, self.prompt_prefix_ids + ids, params, seed, self.tokenizer, self.eos_token_id,
                       healing, prefix_tokens=len(self.prompt_prefix_ids))

    def _check_token_ids(self, prompt) -> list[int]:
        try:
            ids = np.asarray(prompt)
        except (ValueError, OverflowError):  # ragged, or integers beyond int64
            ids = np.asarray([], object)
        if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu":
            raise AigcError(f"prompt: token ids must be a non-empty list of integers, got {shown(prompt)}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise AigcError(f"prompt: token ids must lie in [0, {self.vocab_size}), got "
                            f"{int(ids.min())}..{int(ids.max())}")
        return ids.tolist()

    def _check_in_vocab(self, what: str, ids) -> None:
        """Ids the tokenizer knows but the model does not (a tokenizer with added tokens
        beyond the model's vocab_size) would index past the model's embeddings and logits."""
        outside = [token for token in ids if token >= self.vocab_size]
        if outside:
            raise AigcError(f"{what}: token id {outside[0]} is outside the model's vocabulary of "
                            f"{self.vocab_size} tokens")

    def _fit_context(self, ids: list[int], params: SamplingParams) -> list[int]:
        context = self.request_room
        if context is None or len(ids) + params.max_new_tokens <= context:
            return ids
        room = context - params.max_new_tokens
        if params.truncate_prompt and room >= 1:
            return ids[len(ids) - room:]
        prefix = len(self.prompt_prefix_ids)
        raise AigcError(f"prompt: {len(ids)} tokens + max_new_tokens {params.max_new_tokens} exceed the model's "
                        f"context of {context} tokens" + (f" (beside its {prefix}-token prompt prefix)" if prefix else "")
                        + ("" if params.max_new_tokens >= context else " (truncate_prompt=True keeps the last "
                                                                       f"{max(room, 0)} prompt tokens)"))

    def _run(self, requests: list[Request]) -> Iterator[None]:
        """Runs the requests to the end, one locked step at a time; yields after each step
        so that stream() can hand out text as it comes. A step that raises fails the
        requests it ran (their finish_reason 'error'); KeyboardInterrupt, or a stream closed
        early, takes the call's requests out of the batch and passes on."""
        try:
            with self._lock:
                for request in requests:
                    self.scheduler.add(request)
            while not all(r.finished for r in requests):
                with self._lock:
                    try:
                        self.scheduler.step()
                    except Exception as error:  # noqa: BLE001 — fail this call, keep the generator usable
                        self._abandon(requests, failure_message(error))
                yield
        except BaseException as error:
            self._abandon(requests, f"interrupted ({type(error).__name__})")
            raise

    def _abandon(self, requests: list[Request], message: str) -> None:
        """Fail the unfinished requests and take them out of the batch (freeing their KV blocks)."""
        with self._lock:
            for request in requests:
                self.scheduler.cancel(request)
                if not request.finished:
                    request.fail(message)


def _prompt_prefix_ids(artifact: Artifact, tokenizer: TextTokenizer, vocab_size: int) -> list[int]:
    """The token ids of the file's prompt prefix (config 'prompt_prefix'): text the model reads
    before every prompt, which neither the completion nor the prompt's token count shows. A
    model of source files trained on random windows saw every line start (but the corpus's
    first) after a newline; a bare prompt such as `def` gives it no sign that it starts a line
    unless its context says so (README, "Text models")."""
    prefix = artifact.config.get("prompt_prefix", "")
    where = f"{artifact.path}: config 'prompt_prefix'"
    if not isinstance(prefix, str):
        raise ModelFileError(f"{where}: expected a string, got {shown(prefix)}")
    ids = tokenizer.encode_raw(prefix)
    if len(ids) > PROMPT_PREFIX_LIMIT or any(token >= vocab_size for token in ids):
        raise ModelFileError(f"{where}: {len(ids)} tokens, expected at most {PROMPT_PREFIX_LIMIT} within the "
                             f"model's vocabulary of {vocab_size}")
    return ids
