"""The model file: reading and checking it (artifact), the embedded models (registry),
onnxruntime sessions (session), and what a file is (schema, shared with export/)."""

from .artifact import Artifact, read_artifact
from .registry import MODELS_DIR, embedded_artifacts, embedded_names, resolve

__all__ = ["MODELS_DIR", "Artifact", "embedded_artifacts", "embedded_names", "read_artifact", "resolve"]
