"""aigc-engine: classic generative models exported to ONNX and served by a native extension.

The runtime never imports torch: training and export live in the separate
`aigc_export` package (the `train` extra).
"""

from .errors import AigcError, ModelFileError, UnknownModelError
from .images import ImageGenerator
from .png import save_grid
from .sampling import Completion, SamplingParams, TokenLogprob
from .text import TextGenerator

__version__ = "0.1.0"
__all__ = ["AigcError", "Completion", "ImageGenerator", "ModelFileError", "SamplingParams", "TextGenerator",
           "TokenLogprob", "UnknownModelError", "save_grid", "__version__"]
