"""Serving: Engine (one TextGenerator shared by many callers, thread-safe and asyncio),
request handles, and the OpenAI-compatible HTTP app (app.py, needs the `serve` extra)."""

from .engine import Engine, EngineClosed, EngineOverloaded
from .handles import RequestCancelled, RequestFailed, RequestHandle

__all__ = ["Engine", "EngineClosed", "EngineOverloaded", "RequestCancelled", "RequestFailed", "RequestHandle"]
