"""The exceptions aigc_engine raises for bad input.

They derive from ValueError so that code catching ValueError keeps working; the CLI
prints their message as one line and exits non-zero, without a traceback.
"""


class AigcError(ValueError):
    """Bad input to aigc_engine: the message names the argument and the problem."""


class ModelFileError(AigcError):
    """A model file that cannot be used: not ONNX, wrong or missing metadata, bad weights."""


class UnknownModelError(AigcError):
    """A model name that is neither an embedded model nor an existing file."""
