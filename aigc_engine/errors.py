"""The exceptions aigc_engine raises for bad input.

They derive from ValueError so that code catching ValueError keeps working; the CLI
prints their message as one line and exits non-zero, without a traceback.
"""

import sys


class AigcError(ValueError):
    """Bad input to aigc_engine: the message names the argument and the problem."""


class ModelFileError(AigcError):
    """A model file that cannot be used: not ONNX, wrong or missing metadata, bad weights."""


class UnknownModelError(AigcError):
    """A model name that is neither an embedded model nor an existing file."""


def shown(value, limit: int = 60) -> str:
    """A value for an error message: repr() cut to `limit` characters; an integer of more
    than 20 digits by its length (repr fails past Python's 4,300-digit limit)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:
            return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
