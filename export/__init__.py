# aigc_export: the PyTorch side of aigc-engine — data, models, training, ONNX export.
# Images (gan, dcgan, vae) and text (gpt, lstm, with a byte-level BPE tokenizer); the
# Hugging Face GPT-2 import is the runtime's own (torch-free), named here too. Installed
# from the source folder export/ as the import package `aigc_export`; it needs the `train`
# extra (torch, onnxscript, tokenizers, tqdm, …) and is never imported by the torch-free
# runtime `aigc_engine`.
# common/ (ONNX writing and checks, checkpoints, data-parallel training), images/, text/;
# build_model and export_checkpoint dispatch over the families of both; launch runs a
# training function on several ranks.
from aigc_engine.artifacts.hf_gpt2 import load_hf_tokenizer
from aigc_engine.artifacts.hf_import import import_hf  # torch-free, in the runtime; named here as before
from aigc_engine.artifacts.schema import FAMILIES, IMAGE_FAMILIES, TEXT_FAMILIES

from .checkpoint_export import export_checkpoint, set_prompt_prefix, stamp_quality
from .common.checkpoint import load_checkpoint
from .common.launch import launch, launched_by_torchrun
from .common.onnx_export import ExportVerificationError
from .images.data import ImageData, load_images, split_heldout
from .images.export import export_classifier, export_image_model
from .images.quality_probe import measure_quality
from .images.train import DEFAULT_LR, DEFAULT_STEPS, train_classifier, train_image_model
from .models import DEFAULT_CONFIGS, build_model
from .text.data import TextCorpus, corpus_files
from .text.export import export_text_checkpoint, export_text_model
from .text.tokenizer import tokenizer_from_json, train_tokenizer
from .text.train import train_text_model

__all__ = [
    "DEFAULT_CONFIGS", "DEFAULT_LR", "DEFAULT_STEPS", "FAMILIES", "IMAGE_FAMILIES", "ExportVerificationError",
    "ImageData", "build_model", "export_checkpoint", "export_classifier", "export_image_model", "launch",
    "launched_by_torchrun", "load_checkpoint", "load_images", "measure_quality", "set_prompt_prefix", "split_heldout",
    "stamp_quality",
    "train_classifier", "train_image_model",
    "TEXT_FAMILIES", "TextCorpus", "corpus_files", "export_text_checkpoint", "export_text_model", "import_hf",
    "load_hf_tokenizer", "tokenizer_from_json", "train_text_model", "train_tokenizer",
]
