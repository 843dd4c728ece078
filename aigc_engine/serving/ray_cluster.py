"""What `aigc serve --ray` and `aigc batch --ray` share: importing Ray (the `ray` extra),
joining a cluster or starting a local one, and the threads each replica or actor runs.

Without --address a local Ray instance starts on this machine, as many logical CPUs as it
has (at least one per replica thread asked for, so every replica can be placed), without
the dashboard; with --address (a head node's host:port, or "auto") the job joins that
cluster and leaves it running when it ends.
"""

from __future__ import annotations

import os

from ..errors import AigcError

# Serve's controller gives its HTTP proxy 5 s to report ready, then kills it and starts
# another; on a 2-core machine busy training, the proxy started slower than that and
# `aigc serve --ray` failed (ActorDiedError). A local instance this starts waits a minute.
# Ray's processes inherit the environment of the process that starts them; a cluster that
# is joined keeps its own setting.
PROXY_READY_SECONDS = "60"

# A replica's or actor's threads: AIGC_NUM_THREADS of the command's environment, else one
# (replicas, not threads, are how a Ray deployment uses more cores).
DEFAULT_THREADS = 1


def import_ray():
    """The ray module, or a clear error naming the extra that brings it."""
    try:
        import ray
        from ray import serve  # noqa: F401 — Serve comes with the same extra
    except ImportError as error:
        raise AigcError(f"--ray needs the 'ray' extra ({error.name} is missing): "
                        "pip install 'aigc-engine[ray]'") from None
    return ray


def threads_per_replica() -> int:
    value = os.environ.get("AIGC_NUM_THREADS")
    if value is None:
        return DEFAULT_THREADS
    if not value.isdigit() or int(value) < 1:
        raise AigcError(f"AIGC_NUM_THREADS: expected a positive integer, got {value!r}")
    return int(value)


def replica_options(threads: int) -> dict:
    """Ray actor options of one replica or actor: its CPUs reserved, its kernels' threads set."""
    return {"num_cpus": threads, "runtime_env": {"env_vars": {"AIGC_NUM_THREADS": str(threads)}}}


def connect(address: str | None, cpus_needed: int) -> bool:
    """Join the cluster at `address`, or start a local Ray instance; True when this process
    started it (and so shuts it down at the end)."""
    ray = import_ray()
    if ray.is_initialized():  # a caller that already runs Ray (a test, a notebook)
        return False
    if address is not None:
        try:
            ray.init(address=address, logging_level="WARNING")
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise AigcError(f"--address {address}: cannot join the Ray cluster ({error})") from None
        return False
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", PROXY_READY_SECONDS)
    ray.init(num_cpus=max(os.cpu_count() or 1, cpus_needed), include_dashboard=False, logging_level="WARNING")
    return True


def portable_model_names(names: list[str]) -> list[str]:
    """Embedded names as they are, paths made absolute: a replica's or actor's working folder is not
    this one. Unknown names fail here, before anything is deployed."""
    from ..artifacts.registry import resolve

    return [name if resolve(name).stem == name else os.path.abspath(name) for name in names]


def check_replicas(replicas: int) -> None:
    if replicas < 1:
        raise AigcError(f"--replicas: expected an integer >= 1, got {replicas}")
