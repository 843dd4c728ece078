"""Language models (gpt, lstm): the byte-level BPE tokenizer, corpora, models, the
training loop, ONNX export with the tokenizer inside."""
