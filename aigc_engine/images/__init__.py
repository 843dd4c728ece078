"""Image models: ImageGenerator (batched latent sampling through onnxruntime), PNG grids,
and the quality measure behind `aigc eval` (classifier-Fréchet distance)."""

from .generator import ImageGenerator
from .png import save_grid

__all__ = ["ImageGenerator", "save_grid"]
