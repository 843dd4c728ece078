# Running a training function on several ranks. `launch(nproc, train, **kwargs)`:
# - under torchrun (RANK, WORLD_SIZE and LOCAL_RANK set), this process is one rank: it joins
#   the process group torchrun set up (env://) and runs train(**kwargs);
# - nproc > 1: spawns nproc local processes (torch.multiprocessing, MASTER_ADDR=127.0.0.1 and
#   a free port), each a rank running train(**kwargs), and returns rank 0's result;
# - otherwise train(**kwargs) in this process, no process group.
# gloo, as the training loops run on CPU. A rank that fails ends the job: its error
# is raised here, prefixed by its rank, and the other ranks are stopped; joining the group
# times out after INIT_TIMEOUT, and so does any collective that waits that long.
from __future__ import annotations

import inspect
import os
import socket
import sys
from datetime import timedelta

from torch import distributed as dist
from torch import multiprocessing

from .distributed import check_batch_divisible

INIT_TIMEOUT = timedelta(seconds=60)
BACKEND = "gloo"  # the training loops run on CPU
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_MESSAGE_CHARS = 1000  # a pipe write of at most PIPE_BUF (4096) bytes is atomic: no torn message


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def launch(nproc: int | None, train, **kwargs):
    """train(**kwargs) on nproc ranks (None: 1, or torchrun's WORLD_SIZE); rank 0's result.

    train must take batch_size (the global batch, divided among the ranks) and be importable
    by name (spawned ranks unpickle it). Under torchrun, ranks other than 0 return theirs.
    """
    if launched_by_torchrun():
        size = int(os.environ["WORLD_SIZE"])
        if nproc is not None and nproc != size:
            raise ValueError(f"--nproc {nproc}, but torchrun started {size} ranks: leave --nproc out under torchrun")
        _check_batch(train, kwargs, size)
        return _run_rank(train, kwargs)
    nproc = 1 if nproc is None else nproc
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    _check_batch(train, kwargs, nproc)
    if nproc == 1:
        return train(**kwargs)
    return _spawn(nproc, train, kwargs)


def _check_batch(train, kwargs: dict, size: int) -> None:
    batch_size = kwargs["batch_size"] if "batch_size" in kwargs else \
        inspect.signature(train).parameters["batch_size"].default
    check_batch_divisible(batch_size, size)


def _run_rank(train, kwargs: dict):
    # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK are in the environment.
    dist.init_process_group(BACKEND, timeout=INIT_TIMEOUT)
    try:
        return train(**kwargs)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(nproc: int, train, kwargs: dict):
    context = multiprocessing.get_context("spawn")
    messages = context.SimpleQueue()
    environment = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(nproc)}
    if "AIGC_NUM_THREADS" not in os.environ:  # ranks share the cores rather than each taking all of them
        environment["AIGC_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    processes = multiprocessing.start_processes(_rank_main, args=(environment, train, kwargs, messages),
                                                nprocs=nproc, join=False, start_method="spawn")
    received = []
    try:
        while not processes.join(timeout=0.2):
            received += _drain(messages)
    except (multiprocessing.ProcessRaisedException, multiprocessing.ProcessExitedException) as failure:
        # torch has stopped the other ranks; failure names the first rank seen to end
        received += _drain(messages)
        rank = failure.error_index
        raise _rank_failure(rank, processes.processes[rank].exitcode, received, nproc) from None
    except BaseException:
        for process in processes.processes:
            if process.is_alive():
                process.terminate()
        for process in processes.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        raise
    received += _drain(messages)
    return next(m[1] for m in received if m[0] == "result")


def _drain(messages) -> list:
    received = []
    while not messages.empty():
        received.append(messages.get())
    return received


def _rank_failure(rank: int, exitcode: int, received: list, nproc: int) -> Exception:
    # The error of the rank that ended first, which the others' errors (a collective that lost
    # a peer) only echo; or, when it reported none, how it ended.
    errors = [m for m in received if m[0] == "error"]
    reported = [m for m in errors if m[1] == rank]
    if reported:
        return _rank_error(*reported[0][1:], nproc)
    if exitcode is not None and exitcode < 0:
        return RuntimeError(f"rank {rank} of {nproc} was killed by signal {-exitcode}")
    if errors:
        return _rank_error(*errors[0][1:], nproc)
    return RuntimeError(f"rank {rank} of {nproc} ended with exit status {exitcode}")


def _rank_error(rank: int, kind: str, message: str, nproc: int) -> Exception:
    # ValueError and OSError keep their kind (the CLI prints them as one-line errors), others
    # become a RuntimeError that names theirs.
    text = f"rank {rank} of {nproc}: {message}"
    if kind in ("ValueError", "OSError"):
        return ValueError(text) if kind == "ValueError" else OSError(text)
    return RuntimeError(f"rank {rank} of {nproc} failed with {kind}: {message}")


def _rank_main(rank: int, environment: dict, train, kwargs: dict, messages) -> None:
    os.environ.update(environment, RANK=str(rank), LOCAL_RANK=str(rank))
    try:
        result = _run_rank(train, kwargs)
    except Exception as error:  # noqa: BLE001 — reported to the launcher, which raises it
        kind = next((k.__name__ for k in (ValueError, OSError) if isinstance(error, k)), type(error).__name__)
        messages.put(("error", rank, kind, str(error)[:_MESSAGE_CHARS]))
        sys.exit(1)
    if rank == 0:
        messages.put(("result", result))
