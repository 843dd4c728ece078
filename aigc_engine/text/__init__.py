"""Text models: SamplingParams, requests, the tokenizer, the backends (native decoder,
onnxruntime), continuous batching (scheduler) and TextGenerator."""

from .generator import TextGenerator
from .sampling import Completion, SamplingParams, TokenLogprob

__all__ = ["Completion", "SamplingParams", "TextGenerator", "TokenLogprob"]
