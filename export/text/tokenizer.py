# Byte-level BPE with the `tokenizers` library, the same kind GPT-2 uses: a ByteLevel
# pre-tokenizer maps every byte to a printable symbol first, so any UTF-8 text (emoji,
# CJK, stray control bytes) encodes and decodes back unchanged. The one special token
# is <|endoftext|>, between documents and as the stop token. The tokenizer's JSON
# (`to_str()`) is what the ONNX file carries in metadata `aigc.tokenizer`.
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .models import MIN_VOCAB

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of vocab_size tokens (256 bytes + <|endoftext|> + merges) learnt from texts."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size {vocab_size!r} is too small: byte-level BPE needs at least {MIN_VOCAB} "
                         "(256 bytes + <|endoftext|>)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def tokenizer_from_json(text: str) -> Tokenizer:
    return Tokenizer.from_str(text)


def eos_id(tokenizer: Tokenizer) -> int:
    token = tokenizer.token_to_id(EOS)
    if token is None:
        raise ValueError(f"the tokenizer has no {EOS} token")
    return token
