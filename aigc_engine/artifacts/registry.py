"""Model names: the embedded models that ship inside the package, or paths on disk: a
model file, or a Hugging Face GPT-2 folder (converted once into the cache, hf_import.py).

Embedded models live in aigc_engine/models/ as NAME.onnx; `aigc models` lists them.
The digit classifier there is a measuring instrument (aigc eval), not a generator.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UnknownModelError
from .artifact import Artifact, read_artifact
from .hf_import import cached_import

MODELS_DIR = Path(__file__).parent.parent / "models"
INSTRUMENTS = ("digits-classifier",)


def embedded_names(families: tuple[str, ...] | None = None) -> list[str]:
    """Names of the embedded generative models, sorted; only those of `families` if given
    (that reads each file's metadata)."""
    names = sorted(p.stem for p in MODELS_DIR.glob("*.onnx") if p.stem not in INSTRUMENTS)
    if families is None:
        return names
    return [name for name in names if read_artifact(MODELS_DIR / f"{name}.onnx").family in families]


def resolve(name_or_path: str | Path) -> Path:
    """An embedded model's name, a path to a model file, or a Hugging Face GPT-2 folder → the file's path."""
    embedded = MODELS_DIR / f"{name_or_path}.onnx"
    if isinstance(name_or_path, str) and "/" not in name_or_path and embedded.is_file():
        return embedded
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        return cached_import(path)
    names = ", ".join(embedded_names()) or "none installed"
    raise UnknownModelError(f"unknown model '{name_or_path}': not an embedded model ({names}) "
                            f"nor an existing file or folder")


def embedded_artifacts() -> list[Artifact]:
    return [read_artifact(MODELS_DIR / f"{name}.onnx") for name in embedded_names()]
