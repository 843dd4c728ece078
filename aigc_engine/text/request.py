"""One text request while it runs: its tokens, its text, and when it ends.

Text grows through an IncrementalDetokenizer (never a broken UTF-8 character). Stop
strings end the text where they begin and are not part of it; while the end of the text
could still grow into a stop string, that tail is held back from the stream.
"""

from __future__ import annotations

import numpy as np

from .healing import Healing
from .sampling import Completion, SamplingParams, TokenLogprob
from .tokenizer import IncrementalDetokenizer, TextTokenizer


class Request:
    def __init__(self, completion: Completion, prompt_ids: list[int], params: SamplingParams, seed: int,
                 tokenizer: TextTokenizer, eos_token_id: int, healing: Healing | None = None,
                 prefix_tokens: int = 0):
        self.completion = completion
        self.prompt_ids = prompt_ids  # what the model reads: the file's prompt prefix, then the prompt
        self.prefix_tokens = prefix_tokens
        self.params = params
        self.seed = seed
        self.generated: list[int] = []
        self._tokenizer = tokenizer
        self._eos = None if params.ignore_eos else eos_token_id
        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._streamed = 0  # characters of completion.text handed to the stream
        self._longest_stop = max((len(stop) for stop in params.stop), default=0)
        self.healing = healing
        self._unhealed = len(healing.text) if healing else 0  # prompt text still to take off the front
        if params.logprobs is not None:
            completion.logprobs = []

    @property
    def finished(self) -> bool:
        return bool(self.completion.finish_reason)

    @property
    def last_token(self) -> int:
        return self.generated[-1]

    def history(self) -> np.ndarray:
        """Prompt then generated tokens, int64, for the penalties."""
        return np.array(self.prompt_ids + self.generated, np.int64)

    def accept(self, token: int, logprob: float, top_ids: np.ndarray, top_logprobs: np.ndarray) -> None:
        """Add the sampled token and decide whether the request has finished."""
        self.generated.append(token)
        if self.completion.logprobs is not None:
            n = self.params.logprobs
            top = [(int(i), self._tokenizer.token_text(int(i)), float(lp))
                   for i, lp in zip(top_ids[:n], top_logprobs[:n])]
            self.completion.logprobs.append(TokenLogprob(token, self._tokenizer.token_text(token), logprob, top))
        if token == self._eos:
            return self._finish("stop")
        self.completion.token_ids.append(token)
        if self._add_text(self._detokenizer.push(token)):
            return None
        if len(self.generated) >= self.params.max_new_tokens:
            self._finish("length")

    def fail(self, message: str) -> None:
        self.completion.error = message
        self.completion.finish_reason = "error"

    def take_stream_text(self) -> str:
        """The text produced since the last call that can no longer change."""
        text = self.completion.text
        end = len(text) if self.finished else len(text) - self._stop_prefix_length(text)
        piece = text[self._streamed:end]
        self._streamed = max(self._streamed, end)
        return piece

    def _finish(self, reason: str) -> None:
        if reason != "stop-string" and self._add_text(self._detokenizer.flush()):
            return
        self.completion.finish_reason = "stop" if reason == "stop-string" else reason

    def _add_text(self, piece: str) -> bool:
        """Append text; True when a stop string ended the request."""
        if self._unhealed and piece:
            # The first token starts with the healed prompt text (the rest were banned).
            taken = min(self._unhealed, len(piece))
            piece, self._unhealed = piece[taken:], self._unhealed - taken
        if not piece:
            return False
        text = self.completion.text
        if not self._longest_stop:
            self.completion.text = text + piece
            return False
        # A stop string may start in the text already there: search from the earliest start
        # that can reach into the new piece.
        search_from = max(0, len(text) - self._longest_stop + 1)
        text += piece
        found = [i for i in (text.find(s, search_from) for s in self.params.stop) if i >= 0]
        if found:
            self.completion.text = text[:min(found)]
            self._finish("stop-string")
            return True
        self.completion.text = text
        return False

    def _stop_prefix_length(self, text: str) -> int:
        """Length of the longest tail of `text` that is the start of a stop string: only the
        places in the tail where a stop string's first character stands are tried."""
        best = 0
        for stop in self.params.stop:
            start = max(0, len(text) - len(stop) + 1)
            while (start := text.find(stop[0], start)) >= 0:
                if len(text) - start <= best:
                    break
                if stop.startswith(text[start:]):
                    best = len(text) - start
                    break
                start += 1
        return best
