"""`aigc serve --ray`: the same routes, served by Ray Serve replicas.

Each replica loads the models `aigc serve` loads (serving/run.py's load_models) and mounts
the very app `aigc serve` runs (serving/app.py's Server(...).app) as its Serve ingress: one
implementation of the routes, streaming included. Serve's proxy spreads requests over the
replicas; a fixed count (--replicas) or autoscaling bounds (--min-replicas/--max-replicas,
scaled on requests in flight per replica). GET /health, wherever it lands, asks every
replica for its report through the deployment handle's broadcast and returns them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time

from ..errors import AigcError
from .ray_cluster import connect, import_ray, portable_model_names, replica_options

APP_NAME = "aigc"
DEPLOYMENT_NAME = "AigcReplica"
HEALTH_TIMEOUT_SECONDS = 5.0
# How long a failed start waits for Serve's controller to say what it was waiting for: Serve's
# client asks its controller without a bound, and a controller busy restarting a proxy may
# never answer (a CI run's command outlived 270 s there); on a loaded 2-core machine one that
# is well took over 5 s.
STATUS_TIMEOUT_SECONDS = 15.0
DEPLOY_THREAD, ASKING_THREAD = "aigc-ray-deploy", "aigc-ray-ask"
# A replica takes what its engines queue and batch; Serve's own default (5 in flight) would
# starve the continuous batch. Autoscaling aims at a full batch per replica.
DEFAULT_MAX_BATCH_SIZE = 32
# How long `aigc serve --ray` waits for Serve's proxy and every replica (--start-timeout):
# enough for a cluster to place replicas and load big models; a bound, so that a proxy
# Serve keeps restarting ends the command with an error instead of a silent wait.
DEFAULT_START_TIMEOUT_SECONDS = 600.0


class AigcReplica:
    """One Serve replica: the engines and image generators `aigc serve` holds, and its app."""

    def __init__(self, models: list[str], served_names: list[str] | None, max_queued: int, text_options: dict,
                 server_options: dict):
        from ray import serve

        from .app import Server
        from .run import load_models

        text, images = load_models(models, max_queued, served_names, **text_options)
        self.aigc = Server(text, images, **server_options)
        context = serve.get_replica_context()
        self.replica_id, self.app_name, self.deployment = (context.replica_id.unique_id, context.app_name,
                                                           context.deployment)
        self._peers = None  # a handle to this deployment, made at the first /health (one router, kept)

    def __serve_build_asgi_app__(self):
        return _EveryReplicaHealth(self)

    async def replica_health(self) -> dict:
        return {"replica": self.replica_id} | self.aigc.health_report()

    async def cluster_health(self) -> tuple[dict, int]:
        """Every replica's report (one that cannot answer: its error), and the deployment's
        replica counts as Serve's controller sees them; 503 when no replica answered."""
        from ray import serve

        if self._peers is None:
            self._peers = serve.get_deployment_handle(self.deployment, self.app_name)
        try:
            answers = await self._peers.broadcast("replica_health").results_async(timeout_s=HEALTH_TIMEOUT_SECONDS,
                                                                             return_exceptions=True)
        except TimeoutError:
            answers = [TimeoutError(f"not every replica answered within {HEALTH_TIMEOUT_SECONDS:g} s")]
        replicas = [a if isinstance(a, dict) else {"status": "unreachable", "error": f"{type(a).__name__}: {a}"}
                    for a in answers]
        deployment = (await asyncio.to_thread(serve.status)).applications[self.app_name].deployments[self.deployment]
        answered = sum(r.get("status") == "ok" for r in replicas)
        running = deployment.replica_states.get("RUNNING", 0)
        status = "ok" if answered == len(replicas) and answered >= running else "degraded"
        serve_status = getattr(deployment.status, "value", str(deployment.status))  # HEALTHY, UPDATING, ...
        report = {"status": status if answered else "unavailable", "replicas": replicas,
                  "deployment": {"status": serve_status, "replica_states": dict(deployment.replica_states)}}
        return report, 200 if answered else 503

    def __del__(self):
        if hasattr(self, "aigc"):  # not when loading the models failed
            for engine in self.aigc.text.values():
                engine.close(cancel=True)


class _EveryReplicaHealth:
    """The replica's app, GET /health answered for every replica. (A class with an async
    __call__: uvicorn, which runs the app's lifespan in Serve, takes a bound method for ASGI 2.)"""

    def __init__(self, replica: AigcReplica):
        self.replica = replica

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/health" and scope["method"] == "GET":
            from starlette.responses import JSONResponse

            report, status = await self.replica.cluster_health()
            await JSONResponse(report, status)(scope, receive, send)
        else:
            await self.replica.aigc.app(scope, receive, send)


def deployment_options(replicas: int, min_replicas: int | None, max_replicas: int | None, threads: int,
                       max_queued: int, max_batch_size: int | None) -> dict:
    batch = max_batch_size or DEFAULT_MAX_BATCH_SIZE
    options = {"name": DEPLOYMENT_NAME, "ray_actor_options": replica_options(threads),
               "max_ongoing_requests": max_queued + batch}
    if min_replicas is None and max_replicas is None:
        return options | {"num_replicas": replicas}
    low = 1 if min_replicas is None else min_replicas
    high = max(low, replicas) if max_replicas is None else max_replicas
    if low < 0 or high < max(low, 1):
        raise AigcError(f"--min-replicas {low} --max-replicas {high}: expected 0 <= min <= max and max >= 1")
    return options | {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                             "initial_replicas": min(max(replicas, low), high),
                                             "target_ongoing_requests": batch}}


def build_app(models: list[str], served_names: list[str] | None, max_queued: int, text_options: dict,
              server_options: dict, options: dict):
    """The Serve application: AigcReplica with the app as its ingress, bound to its arguments."""
    import_ray()
    from ray import serve

    deployment = serve.deployment(serve.ingress()(AigcReplica), **options)
    return deployment.bind(portable_model_names(models), served_names, max_queued, text_options, server_options)


def within_seconds(call):
    """call() from a daemon thread: its result, or TimeoutError after STATUS_TIMEOUT_SECONDS
    (Serve's client waits on its controller without a bound)."""
    answer: list = []

    def ask() -> None:
        try:
            answer.append(call())
        except Exception as error:  # handed to the waiting thread
            answer.append(error)

    asking = threading.Thread(target=ask, name=ASKING_THREAD, daemon=True)
    asking.start()
    asking.join(STATUS_TIMEOUT_SECONDS)
    if not answer:
        raise TimeoutError(f"no answer within {STATUS_TIMEOUT_SECONDS:g} s")
    if isinstance(answer[0], Exception):
        raise answer[0]
    return answer[0]


def serve_status():
    from ray import serve

    return within_seconds(serve.status)


def why_not_deployed(fallback: str) -> str:
    """The last line of Serve's message on the failed deployment: a replica constructor's
    exception (an unreadable chat template, too little memory for the KV cache, ...)."""
    try:
        application = serve_status().applications.get(APP_NAME)
    except Exception:  # no controller to ask, or one that does not answer
        return fallback
    deployment = application.deployments.get(DEPLOYMENT_NAME) if application else None
    lines = [line.strip() for line in (deployment.message if deployment else "").splitlines() if line.strip()]
    return lines[-1] if lines else fallback


def not_ready() -> str:
    """What Serve is still waiting for: proxies not yet healthy, replicas not yet running."""
    def name(state) -> str:  # Serve's status enums, by value ("HEALTHY", "RUNNING")
        return str(getattr(state, "value", state))

    try:
        status = serve_status()
    except TimeoutError as error:
        return f"Serve's controller ({error})"
    except Exception as error:  # no controller to ask (it died, or never started)
        return f"Serve's controller ({type(error).__name__})"
    waiting = [f"the HTTP proxy on node {node[:8]} ({name(state)}; Serve restarts a proxy that is not ready "
               "within RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S)"
               for node, state in status.proxies.items() if name(state) != "HEALTHY"]
    application = status.applications.get(APP_NAME)
    deployment = application.deployments.get(DEPLOYMENT_NAME) if application else None
    if deployment is None:
        waiting.append("the application, not deployed yet")
    elif {name(state) for state in deployment.replica_states} != {"RUNNING"}:
        counts = sorted((name(state), count) for state, count in deployment.replica_states.items())
        waiting.append("the replicas (" + ", ".join(f"{count} {state}" for state, count in counts) + ")")
    return "; ".join(waiting) or "nothing more (it was about to be ready)"


def deploy(application, host: str, port: int, log_level: str, start_timeout: float, stop: threading.Event) -> None:
    """serve.start + serve.run, which wait without a bound (a proxy that never gets ready is
    restarted forever) and cannot be interrupted: run in a thread, waited on here until it
    finishes, `stop` is set (SIGINT/SIGTERM: KeyboardInterrupt) or start_timeout seconds pass
    (AigcError saying what was not ready)."""
    from ray import serve
    from ray.serve.config import HTTPOptions
    from ray.serve.schema import LoggingConfig

    failed: list[BaseException] = []

    def run() -> None:
        try:
            serve.start(http_options=HTTPOptions(host=host, port=port))
            serve.run(application, name=APP_NAME, route_prefix="/",
                      logging_config=LoggingConfig(log_level=log_level.upper(), enable_access_log=False))
        except BaseException as error:  # handed to the waiting thread
            failed.append(error)

    worker = threading.Thread(target=run, name=DEPLOY_THREAD, daemon=True)
    worker.start()
    deadline = time.monotonic() + start_timeout
    while worker.is_alive():
        if stop.wait(0.25):
            raise KeyboardInterrupt
        if time.monotonic() > deadline:
            raise AigcError(f"--ray: not ready after --start-timeout {start_timeout:g} s: waiting for {not_ready()}")
    if failed and isinstance(failed[0], RuntimeError):  # a replica that could not start
        raise AigcError(f"--ray: the replicas did not start: {why_not_deployed(str(failed[0]))}") from None
    if failed and isinstance(failed[0], Exception):  # e.g. the proxy's actor killed by Serve as not ready in time
        reason = str(failed[0]).strip().splitlines()[0] if str(failed[0]).strip() else type(failed[0]).__name__
        raise AigcError(f"--ray: Serve did not start ({reason}); waiting for {not_ready()}") from None
    if failed:
        raise failed[0]


def release_waiters(ray) -> None:
    """Kill Serve's controller and wait (boundedly) for this module's threads that wait on it:
    serve.start's and serve.status's calls return with an error then. Left waiting, they meet
    the core worker torn down under them by ray.shutdown, and Ray ends the process there,
    before the command can say why its start failed."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    with contextlib.suppress(ValueError):  # no controller yet
        ray.kill(ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE), no_restart=True)
    deadline = time.monotonic() + STATUS_TIMEOUT_SECONDS
    for waiter in [t for t in threading.enumerate() if t.name in (DEPLOY_THREAD, ASKING_THREAD)]:
        waiter.join(max(0.0, deadline - time.monotonic()))


def serve_on_ray(application, address: str | None, host: str, port: int, cpus_needed: int,
                 log_level: str = "warning", start_timeout: float = DEFAULT_START_TIMEOUT_SECONDS) -> None:
    """Deploy `application` behind Serve's proxy on host:port (see `deploy` for the wait);
    wait for SIGINT/SIGTERM; then delete it (and stop the local Ray instance this started)."""
    ray = import_ray()
    from ray import serve
    from ray.serve.exceptions import RayServeException

    started = connect(address, cpus_needed)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    ready = False
    try:
        deploy(application, host, port, log_level, start_timeout, stop)
        ready = True
        status = serve.status().applications[APP_NAME].deployments[DEPLOYMENT_NAME]
        print(f"aigc serve: http://{host}:{port} — Ray Serve, {status.replica_states.get('RUNNING', 0)} replicas "
              f"running ({'cluster ' + address if address else 'local Ray instance'})", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # After a start that failed or was cut short, nothing here waits on Serve: its graceful
        # shutdown waited on the proxy it kept restarting. Stopping the local instance stops
        # every process of it anyway.
        if started:
            if ready:
                serve.shutdown()
            else:
                release_waiters(ray)
            ray.shutdown()
        else:  # a cluster this joined keeps running, without this application
            with contextlib.suppress(RayServeException, TimeoutError):  # Serve never started there, or hangs
                if ready:
                    serve.delete(APP_NAME)
                else:
                    within_seconds(lambda: serve.delete(APP_NAME, _blocking=False))
