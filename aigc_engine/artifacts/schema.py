"""What a model file is: the families, the metadata keys, the config keys, the format
version and the graph's input and output names.

The one place these are written: the runtime reads files by them and export/ (the
PyTorch side) writes files by them. Torch-free and dependency-free, so both sides import
it without pulling anything in.
"""

from __future__ import annotations

# Format versions (integers; stored as text). A file carries the oldest version whose
# readers run it: 1, except a VAE with its encoder path (below), which a version-1 reader
# would load but then fail to run (onnxruntime wants every graph input fed).
FORMAT_VERSION = 1
VAE_ENCODER_FORMAT_VERSION = 2
NEWEST_FORMAT_VERSION = 2  # the newest this runtime reads

IMAGE_FAMILIES = ("gan", "dcgan", "vae")
TEXT_FAMILIES = ("gpt", "lstm")
CLASSIFIER = "classifier"  # the digit classifier behind `aigc eval`: an instrument, not a generator
FAMILIES = IMAGE_FAMILIES + TEXT_FAMILIES + (CLASSIFIER,)

# metadata_props keys
META_FAMILY = "aigc.family"
META_FORMAT_VERSION = "aigc.format_version"
META_CONFIG = "aigc.config"            # JSON object: the sizes below
META_PROVENANCE = "aigc.provenance"    # JSON object: dataset, steps, seed, quality at export
META_DESCRIPTION = "aigc.description"
META_TOKENIZER = "aigc.tokenizer"      # text families: the `tokenizers` JSON
# Optional, text families: JSON {"template": Jinja source, "special_tokens": {"bos_token": ..., ...}}
META_CHAT_TEMPLATE = "aigc.chat_template"

IMAGE_CONFIG_KEYS = ("latent_dim", "channels", "height", "width")
TEXT_CONFIG_KEYS = {"gpt": ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "eos_token_id"),
                    "lstm": ("vocab_size", "n_embd", "hidden_size", "n_layer", "eos_token_id")}
# Optional in a text model's config: "prompt_prefix", text the model reads before every prompt
# (text/generator.py), of at most this many tokens
PROMPT_PREFIX_LIMIT = 64

# Graph inputs and outputs.
IMAGE_INPUT, IMAGE_OUTPUT = "z", "images"          # z (N, latent_dim) -> images (N, C, H, W) in [-1, 1]
# A VAE's encoder path in the same graph, independent of the decoder's (its own batch size):
# input_images (M, C, H, W) in [-1, 1] -> the posterior q(z|x) = N(mean, exp(log_variance)), each (M, latent_dim)
VAE_ENCODER_INPUT = "input_images"
VAE_ENCODER_OUTPUTS = ("mean", "log_variance")
CLASSIFIER_INPUT = "images"                        # images (N, C, H, W) -> logits, features
CLASSIFIER_OUTPUTS = ("logits", "features")
GPT_INPUTS = ("input_ids", "position_ids", "attention_mask")
LSTM_INPUTS = ("input_ids", "past.h", "past.c")
LSTM_OUTPUTS = ("logits", "present.h", "present.c")
LOGITS = "logits"


def gpt_past_names(n_layer: int) -> list[str]:
    """past.{i}.key, past.{i}.value for every layer, in that order."""
    return [f"past.{i}.{kind}" for i in range(n_layer) for kind in ("key", "value")]


def gpt_present_names(n_layer: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(n_layer) for kind in ("key", "value")]


# How the native decoder may hold a GPT's weights.
WEIGHT_DTYPES = ("float32", "bfloat16", "int8")
