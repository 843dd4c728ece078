"""GET /metrics of `aigc serve`: Prometheus text format, through prometheus_client, one
CollectorRegistry per Server (several servers may share a process).

- aigc_http_requests_total{route, method, status}: answered requests, by route template
  (/v1/models/{model_id}, not each id; "unmatched" for unknown paths), counted by an ASGI
  middleware as each response starts, so 401s, 404s and streams count too.
- aigc_requests_waiting / aigc_requests_running / aigc_kv_cache_blocks_used /
  aigc_kv_cache_blocks_free (gauges) and aigc_preemptions_total (counter), per text model:
  read from Engine.stats() at scrape time (the KV and preemption series exist for the
  native backend only: onnxruntime has no paged cache).
- aigc_time_to_first_token_seconds, aigc_e2e_request_latency_seconds and
  aigc_generation_tokens (histograms, per text model): each request that finishes
  successfully, measured from its submission (after parsing and tokenising) on the
  engine's clock; tokens as the response's usage counts them.
"""

from __future__ import annotations

import re
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.routing import Match

from .engine import Engine
from .handles import RequestHandle

TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class _EngineCollector:
    """Gauges and the preemption counter from each engine's stats(), at scrape time."""

    def __init__(self, engines: dict[str, Engine]):
        self.engines = engines

    def collect(self):
        waiting = GaugeMetricFamily("aigc_requests_waiting", "Requests waiting for a place in the batch",
                                    labels=["model"])
        running = GaugeMetricFamily("aigc_requests_running", "Requests in the batch", labels=["model"])
        used = GaugeMetricFamily("aigc_kv_cache_blocks_used", "KV-cache blocks held by requests", labels=["model"])
        free = GaugeMetricFamily("aigc_kv_cache_blocks_free", "KV-cache blocks free", labels=["model"])
        preemptions = CounterMetricFamily("aigc_preemptions", "Requests preempted (their KV blocks freed, "
                                          "recomputed later) since the start", labels=["model"])
        for name, engine in self.engines.items():
            stats = engine.stats()
            waiting.add_metric([name], stats["queued"])
            running.add_metric([name], stats.get("running", 0))
            if "num_blocks" in stats:
                used.add_metric([name], stats["num_blocks"] - stats["free_blocks"])
                free.add_metric([name], stats["free_blocks"])
                preemptions.add_metric([name], stats["preemptions"])
        return [waiting, running, used, free, preemptions]


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engines: dict[str, Engine]):
        self.registry = CollectorRegistry()
        self.requests = Counter("aigc_http_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=self.registry)
        self.ttft = Histogram("aigc_time_to_first_token_seconds", "From submission to the first generated token",
                              ["model"], buckets=TIME_BUCKETS, registry=self.registry)
        self.latency = Histogram("aigc_e2e_request_latency_seconds", "From submission to the last token",
                                 ["model"], buckets=TIME_BUCKETS, registry=self.registry)
        self.tokens = Histogram("aigc_generation_tokens", "Tokens generated per request (as usage counts them)",
                                ["model"], buckets=TOKEN_BUCKETS, registry=self.registry)
        self.registry.register(_EngineCollector(engines))
        for name, engine in engines.items():
            engine.add_finish_listener(self._observer(name))

    def _observer(self, model: str):
        ttft, latency, tokens = self.ttft.labels(model), self.latency.labels(model), self.tokens.labels(model)

        def observe(handle: RequestHandle) -> None:  # on the engine thread; observe() is thread-safe
            now = time.monotonic()
            if handle.first_token_at is not None:
                ttft.observe(handle.first_token_at - handle.submitted_at)
            latency.observe(now - handle.submitted_at)
            tokens.observe(len(handle.completion.token_ids))
        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounter:
    """ASGI middleware: counts each HTTP response by route template, method and status
    (500 when the app raised before answering)."""

    def __init__(self, app, metrics: Metrics, routes: list):
        self.app, self.metrics, self.routes = app, metrics, routes
        # the label: the template without converters ("/v1/models/{model_id}")
        self.names = [re.sub(r":\w+}", "}", route.path) for route in routes]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def counting(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":  # counted as it starts (a stream may run long)
                started = True
                self._count(scope, message["status"])
            await send(message)
        try:
            await self.app(scope, receive, counting)
        finally:
            if not started:  # the app raised: the error middleware outside answers 500
                self._count(scope, 500)

    def _count(self, scope, status: int) -> None:
        self.metrics.requests.labels(self._route(scope), scope["method"], str(status)).inc()

    def _route(self, scope) -> str:
        for route, name in zip(self.routes, self.names):
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return name
        return "unmatched"
