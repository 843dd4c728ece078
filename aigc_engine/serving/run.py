"""Running `aigc serve`: the models loaded into engines, the socket bound, and uvicorn run
with bounded headers, closed idle connections and a graceful shutdown (what still runs
after Server.graceful_shutdown seconds is cancelled, its clients answered with 503).
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import threading

from ..errors import AigcError
from ..images.generator import ImageGenerator
from .app import KEEP_ALIVE_SECONDS, Server
from .engine import Engine
from .wire import limited_protocol


def load_models(names: list[str], max_queued: int, served_names: list[str] | None = None,
                **text_options) -> tuple[dict, dict]:
    """Names or paths → ({id: Engine}, {id: ImageGenerator}); the id is served_names[i] when
    given (one per model, in order), else the name, or the file's stem (a folder's name) for
    a path."""
    import os
    from pathlib import Path

    from ..artifacts.artifact import IMAGE_FAMILIES, TEXT_FAMILIES, read_artifact
    from ..artifacts.registry import resolve

    if served_names is not None:
        if len(served_names) != len(names):
            raise AigcError(f"--served-model-name: {len(served_names)} names for {len(names)} models "
                            "(give one per model, in the same order)")
        for served in served_names:
            if not served or not served.isprintable() or served != served.strip():
                raise AigcError(f"--served-model-name: {served!r} is not a usable name (printable, no surrounding "
                                "spaces)")
    text, images = {}, {}
    try:
        for index, name in enumerate(names):
            path = resolve(name)
            model_id = name if path.stem == name else Path(os.path.abspath(name)).stem  # `.` is its folder's name
            if served_names is not None:
                model_id = served_names[index]
            if model_id in text or model_id in images:
                raise AigcError(f"model '{model_id}' is given twice")
            artifact = read_artifact(path)
            if artifact.family in TEXT_FAMILIES:
                text[model_id] = Engine.load(str(path), max_queued=max_queued, **text_options)
            elif artifact.family in IMAGE_FAMILIES:
                images[model_id] = ImageGenerator.load(str(path), device=text_options.get("device", "cpu"))
            else:
                raise AigcError(f"model '{model_id}': a {artifact.family} model cannot be served")
    except BaseException:
        for engine in text.values():
            engine.close(cancel=True)
        raise
    return text, images


def check_allowed_origins(origins: list[str] | None) -> None:
    """Each CORS origin is '*' or scheme://host[:port], as browsers send it in Origin."""
    for origin in origins or []:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise AigcError(f"--allowed-origins: expected '*' or an origin such as https://example.com (scheme, "
                            f"host, optional port; no path), got {origin!r}")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"--host {host} --port {port}: cannot bind ({error.strerror})") from None
    # Listening from here (uvicorn's backlog), not from when uvicorn starts: a client that
    # connects as soon as the URL is printed waits in the queue instead of being refused.
    sock.listen(2048)
    return sock


def is_loopback(sock: socket.socket) -> bool:
    import ipaddress

    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def uvicorn_server(server: Server, log_level: str = "warning"):
    """A uvicorn.Server for `server`: headers bounded in size and time, kept-alive idle
    connections closed after KEEP_ALIVE_SECONDS; on shutdown, what still runs after
    server.graceful_shutdown seconds is cancelled (its clients get 503), so no request is
    cut off without an answer."""
    import uvicorn

    class _Uvicorn(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(server.graceful_shutdown, server.cancel_all)
            try:
                await super().shutdown(sockets)
            finally:
                timer.cancel()

    config = uvicorn.Config(server.app, log_level=log_level, http=limited_protocol(server.header_timeout,
                                                                                   server.max_header_bytes),
                            timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            # a backstop: cancel_all has answered every request by then
                            timeout_graceful_shutdown=server.graceful_shutdown + 5)
    return _Uvicorn(config)


def serve(server: Server, sock: socket.socket, log_level: str = "warning") -> None:
    """Run uvicorn on a bound socket until SIGINT/SIGTERM; then finish the requests in flight
    (up to server.graceful_shutdown seconds), cancel what is left (JSON 503s), close the
    engines, and return normally."""
    # uvicorn re-raises the signal that stopped it once it has shut down; with these no-op
    # handlers underneath, that ends here instead of killing the process before the
    # engines are closed.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    host, port = sock.getsockname()[:2]
    print(f"aigc serve: http://{host}:{port} — text: {', '.join(server.text) or 'none'}; "
          f"images: {', '.join(server.images) or 'none'}", file=sys.stderr, flush=True)
    if not is_loopback(sock) and server.api_key is None:
        print(f"aigc serve: warning: listening on {host}, not a loopback address, without --api-key: "
              "anyone who can reach this address can use the server", file=sys.stderr, flush=True)
    try:
        uvicorn_server(server, log_level).run(sockets=[sock])
    finally:
        for engine in server.text.values():
            engine.close(cancel=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
