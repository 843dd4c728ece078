"""A small byte-level BPE tokenizer trained in memory, for tests that need one."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from aigc_engine.text.tokenizer import TextTokenizer

CORPUS = ["def main():\n    return 0\n", "naïve café — 日本語 🙂 text", "for i in range(10):\n    print(i)\n"] * 20


def byte_level_bpe(vocab_size: int = 300) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def text_tokenizer(vocab_size: int = 300) -> TextTokenizer:
    return TextTokenizer.from_json(byte_level_bpe(vocab_size).to_str(), "test")
