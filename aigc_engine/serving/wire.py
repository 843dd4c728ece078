"""What `aigc serve` takes off the wire, within limits: request headers (a size and a
time limit, enforced in the HTTP protocol before the app sees the request) and JSON
bodies (strict UTF-8, bounded nesting and integer length, no NaN or infinities, no lone
surrogates); and JSON responses that cannot fail to encode (ASCII-escaped), so an error
message quoting what a client sent is always deliverable.
"""

from __future__ import annotations

import json
import math

from starlette.responses import JSONResponse

MAX_HEADER_BYTES = 16 << 10  # request line + headers; h11's default limit too (SDKs send < 1 KiB)
HEADER_TIMEOUT_SECONDS = 10.0  # from a connection's (or an idle keep-alive's) first byte to the end of the headers
MAX_JSON_DEPTH = 32  # a completion body nests 3 levels (stream_options, lists of token ids)
MAX_JSON_DIGITS = 64  # seeds reach 2**64 - 1 (20 digits); 5000 digits made int() raise inside json.loads


class BodyError(ValueError):
    """The body is not JSON this server parses; the message says why (HTTP 400)."""


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate in a client's text,
    quoted back in an error message, cannot make the response itself fail to encode."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise BodyError(f"an integer of {len(text.lstrip('-'))} digits (the limit is {MAX_JSON_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"the number {text[:24]}{'...' if len(text) > 24 else ''} is too large for a float")
    return value


def _constant(name: str):
    raise BodyError(f"{name} is not a JSON number")


def parse_json(data: bytes) -> object:
    """The body as a Python value, or BodyError naming the problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(f"the request body is not valid UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except BodyError as error:
        raise BodyError(f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise BodyError(f"the request body nests too deeply (the limit is {MAX_JSON_DEPTH} levels)") from None
    except ValueError as error:  # json.JSONDecodeError and any other refusal inside the parser
        raise BodyError(f"the request body is not valid JSON ({error})") from None
    _check_tree(value, '\\ud' in text or '\\uD' in text)
    return value


def _check_tree(value: object, may_have_surrogates: bool) -> None:
    """Depth within MAX_JSON_DEPTH; no lone surrogate (only a \\uD800-\\uDFFF escape can
    make one, strict UTF-8 decoding refuses the rest) in a key or a string."""
    stack = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if may_have_surrogates and _lone_surrogate(node):
                where = f" at {'.'.join(map(str, path))}" if path else ""
                raise BodyError(f"the request body has a string{where} with a lone surrogate: not valid Unicode")
            continue
        if isinstance(node, (list, dict)) and depth > MAX_JSON_DEPTH:
            raise BodyError(f"the request body nests too deeply (the limit is {MAX_JSON_DEPTH} levels)")
        if isinstance(node, list):
            if may_have_surrogates or any(isinstance(item, (list, dict)) for item in node):
                stack += [(item, depth + 1, path + (i,)) for i, item in enumerate(node)]
        elif isinstance(node, dict):
            for key, item in node.items():
                if may_have_surrogates and _lone_surrogate(key):
                    raise BodyError("the request body has a field name with a lone surrogate: not valid Unicode")
                stack.append((item, depth + 1, path + (key,)))


def _lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _response(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode("ascii")
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode("ascii") + body


def limited_protocol(header_timeout: float = HEADER_TIMEOUT_SECONDS, max_header_bytes: int = MAX_HEADER_BYTES):
    """uvicorn's httptools protocol, with a request's headers bounded in size (431) and in
    time (408), from the first byte of a connection, or of the next request on a kept-alive
    one, to the end of the headers. Idle keep-alive connections close after uvicorn's
    timeout_keep_alive; the body's time limit is the app's (Server.body_timeout)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._header_timer = None
            self._header_bytes = 0
            self._in_headers = False
            self._between = True  # no request begun since the last one's end: the next bytes are headers

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_header_timer()

        def connection_lost(self, exc) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._in_headers or self._between:
                self._header_bytes += len(data)
                self._start_header_timer()
            super().data_received(data)
            if self._in_headers and self._header_bytes > max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large",
                             f"the request's headers exceed the limit of {max_header_bytes} bytes",
                             "headers_too_large")

        def on_message_begin(self) -> None:
            self._in_headers, self._between = True, False
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            self._in_headers = False
            size, self._header_bytes = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers), 0
            if size > max_header_bytes:  # all of it came in one read
                self._refuse(431, "Request Header Fields Too Large",
                             f"the request's headers exceed the limit of {max_header_bytes} bytes",
                             "headers_too_large")
                raise ConnectionAbortedError("headers too large")  # stops the parser; the reply is sent
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._between = True
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            if not self.transport.is_closing():  # not after our own 408/431
                super().send_400_response(msg)

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_timeout)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            self._refuse(408, "Request Timeout",
                         f"the request's headers did not arrive within {header_timeout:g} s", "header_timeout")

        def _refuse(self, status: int, reason: str, message: str, code: str) -> None:
            self._stop_header_timer()
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:  # not while a response is being sent
                self.transport.write(_response(status, reason, message, code))
            self.transport.close()

    return LimitedHttpToolsProtocol
