"""The API key of `aigc serve --api-key` (or AIGC_API_KEY): an ASGI middleware that wants
`Authorization: Bearer KEY` on every route but /health and /metrics (probes and scrapers
carry no key), and answers anything else with OpenAI's 401 body. Keys are compared as
SHA-256 digests with hmac.compare_digest: the time taken tells nothing about the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from ..errors import AigcError
from .wire import SafeJSONResponse

OPEN_PATHS = frozenset({"/health", "/metrics"})
ENV_VAR = "AIGC_API_KEY"


def check_api_key(key: str, source: str = "--api-key") -> str:
    """The key, or AigcError: it travels in a header, so printable ASCII without spaces."""
    if not key:
        raise AigcError(f"{source}: empty")
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        raise AigcError(f"{source}: expected printable ASCII without spaces (it is sent in the Authorization header)")
    return key


def api_key_of(flag: str | None) -> str | None:
    """The key of --api-key, else of $AIGC_API_KEY, else None (no key), checked."""
    if flag is not None:
        return check_api_key(flag)
    key = os.environ.get(ENV_VAR)
    return None if key is None else check_api_key(key, ENV_VAR)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class ApiKeyMiddleware:
    def __init__(self, app, api_key: str):
        self.app = app
        self._expected = _digest(check_api_key(api_key).encode("ascii"))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        problem = self._problem(header)
        if problem is None:
            return await self.app(scope, receive, send)
        body = {"error": {"message": problem, "type": "invalid_request_error", "param": None,
                          "code": "invalid_api_key"}}
        await SafeJSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)

    def _problem(self, header: bytes | None) -> str | None:
        if header is None:
            return "missing API key: send the header 'Authorization: Bearer YOUR_KEY'"
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return "the Authorization header must be 'Bearer YOUR_KEY'"
        if not hmac.compare_digest(_digest(token.strip()), self._expected):
            return "incorrect API key provided"
        return None
