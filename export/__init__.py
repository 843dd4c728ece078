# aigc_export: the PyTorch side of aigc-engine — data, models, training, ONNX export.
# Images (gan, dcgan, vae) and text (gpt, lstm, with a byte-level BPE tokenizer and the
# Hugging Face GPT-2 import). Installed from the source folder export/ as the import
# package `aigc_export`; it needs the `train` extra (torch, onnxscript, tokenizers, tqdm, …)
# and is never imported by the torch-free runtime `aigc_engine`.
from .checkpoint import load_checkpoint
from .data import ImageData, load_images, split_heldout
from .models import DEFAULT_CONFIGS, FAMILIES, IMAGE_FAMILIES, build_model
from .onnx_export import ExportVerificationError, export_checkpoint, export_classifier, export_image_model
from .quality_probe import measure_quality
from .hf_import import import_hf
from .text_data import TextCorpus, corpus_files
from .text_export import export_text_model
from .text_models import TEXT_FAMILIES
from .text_train import export_text_checkpoint, train_text_model
from .tokenizer import load_hf_tokenizer, tokenizer_from_json, train_tokenizer
from .train import DEFAULT_LR, DEFAULT_STEPS, train_classifier, train_image_model

__all__ = [
    "DEFAULT_CONFIGS", "DEFAULT_LR", "DEFAULT_STEPS", "FAMILIES", "IMAGE_FAMILIES", "ExportVerificationError",
    "ImageData", "build_model", "export_checkpoint", "export_classifier", "export_image_model", "load_checkpoint",
    "load_images", "measure_quality", "split_heldout", "train_classifier", "train_image_model",
    "TEXT_FAMILIES", "TextCorpus", "corpus_files", "export_text_checkpoint", "export_text_model", "import_hf",
    "load_hf_tokenizer", "tokenizer_from_json", "train_text_model", "train_tokenizer",
]
