"""The exceptions aigc_engine raises for bad input.

They derive from ValueError so that code catching ValueError keeps working; the CLI
prints their message as one line and exits non-zero, without a traceback.
"""

import re
import sys
from collections.abc import Mapping


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


def respell(message: str, spellings: Mapping[str, str]) -> str:
    """`message` with each setting written the Python API's way — a field name such as
    `max_new_tokens`, or an assignment such as `truncate_prompt=True` — replaced by its
    spelling in another front end (`aigc` writes `--truncate-prompt`, HTTP `"truncate_prompt":
    true`). Messages travel as strings (a Completion's error, an exception from another
    process), so each front end respells them where it shows them."""
    if not spellings:
        return message
    names = "|".join(map(re.escape, sorted(spellings, key=len, reverse=True)))
    return re.sub(rf"(?<![\w-])(?:{names})(?![\w=])", lambda match: spellings[match.group(0)], message)
