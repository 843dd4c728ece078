"""aigc-engine: classic generative models exported to ONNX and served by a native extension.

The runtime never imports torch: training and export live in the separate
`aigc_export` package (the `train` extra).
"""

from .errors import AigcError, ModelFileError, UnknownModelError
from .images import ImageGenerator, save_grid
from .serving import Engine
from .text import Completion, SamplingParams, TextGenerator, TokenLogprob

__version__ = "0.1.0"
__all__ = ["AigcError", "Completion", "Engine", "ImageGenerator", "ModelFileError", "SamplingParams",
           "TextGenerator", "TokenLogprob", "UnknownModelError", "save_grid", "__version__"]
