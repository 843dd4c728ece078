# aigc_export: the PyTorch side of aigc-engine — data, models, training, ONNX export.
# Installed from the source folder export/ as the import package `aigc_export`; it needs
# the `train` extra (torch, onnxscript, mlxtend, scikit-learn, pillow, tqdm) and is never
# imported by the torch-free runtime `aigc_engine`.
from .checkpoint import load_checkpoint
from .data import ImageData, load_images, split_heldout
from .models import DEFAULT_CONFIGS, FAMILIES, IMAGE_FAMILIES, build_model
from .onnx_export import ExportVerificationError, export_checkpoint, export_classifier, export_image_model
from .quality_probe import measure_quality
from .train import DEFAULT_LR, DEFAULT_STEPS, train_classifier, train_image_model

__all__ = [
    "DEFAULT_CONFIGS", "DEFAULT_LR", "DEFAULT_STEPS", "FAMILIES", "IMAGE_FAMILIES", "ExportVerificationError",
    "ImageData", "build_model", "export_checkpoint", "export_classifier", "export_image_model", "load_checkpoint",
    "load_images", "measure_quality", "split_heldout", "train_classifier", "train_image_model",
]
