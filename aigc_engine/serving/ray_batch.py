"""`aigc batch --ray`: an OpenAI batch file spread over Ray actors.

Each actor loads the models once and answers its share of the lines through the server's
own routes, as the in-process job does (batch.py's `answers`: `--concurrency` at a time, so
its engine batches them continuously), streaming each output line back as its request
ends. This process alone reads the input and writes the output: lines are written as they
arrive, each flushed whole, so resuming and every custom_id exactly once work as in-process
(the ids already in the output are skipped before any actor starts). Shares are dealt
round-robin, so each actor gets an equal count of lines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..errors import AigcError
from .batch import Progress, answers, check_concurrency, read_todo
from .ray_cluster import (
    check_replicas,
    connect,
    import_ray,
    portable_model_names,
    replica_options,
    threads_per_replica,
)

MAX_QUEUED = 256  # per actor's engine, as the in-process job's
# For the actors to be placed and load their models: a cluster without the CPUs they ask
# for (AIGC_NUM_THREADS each) would otherwise keep the job waiting without a word.
START_SECONDS = 600


class BatchActor:
    """One engine per text model, and the routes over them, in one Ray actor."""

    def __init__(self, models: list[str], text_options: dict):
        from .app import Server
        from .run import load_models

        text, images = load_models(models, MAX_QUEUED, **text_options)
        self.server = Server(text, images)

    def ready(self) -> bool:
        return True

    async def run(self, lines: list[tuple[int, str]], concurrency: int):
        """(output line, tokens) of each line, yielded as its request ends."""
        text = self.server.text
        default_model = next(iter(text)) if len(text) == 1 else None
        async for result in answers(self.server.app, lines, min(concurrency, MAX_QUEUED), default_model):
            yield result


async def _collect(streams, out, progress: Progress) -> None:
    async def drain(stream) -> None:
        async for ref in stream:
            text, tokens = await ref
            out.write(text)
            out.flush()
            progress.add(tokens)

    await asyncio.gather(*(drain(stream) for stream in streams))


def batch_on_ray(models: list[str], text_options: dict, input_path: str, output_path: str, concurrency: int,
                 quiet: bool, replicas: int, address: str | None) -> tuple[int, int]:
    """Run INPUT's requests on `replicas` Ray actors into OUTPUT; returns (lines run now,
    lines skipped as already done)."""
    ray = import_ray()
    check_concurrency(concurrency)
    check_replicas(replicas)
    models = portable_model_names(models)
    threads = threads_per_replica()
    todo, skipped = read_todo(input_path, output_path)
    if not todo:
        return 0, skipped
    started = connect(address, replicas * threads)
    actor_class = ray.remote(**replica_options(threads))(BatchActor)
    actors = [actor_class.remote(models, text_options) for _ in range(min(replicas, len(todo)))]
    progress = None
    try:
        # models loaded: the clock of tokens/s starts
        ray.get([actor.ready.remote() for actor in actors], timeout=START_SECONDS)
        progress = Progress(len(todo), quiet)
        streams = [actor.run.options(num_returns="streaming").remote(todo[i::len(actors)], concurrency)
                   for i, actor in enumerate(actors)]
        with Path(output_path).open("a", encoding="utf-8") as out:
            asyncio.run(_collect(streams, out, progress))
    except ray.exceptions.GetTimeoutError:
        raise AigcError(f"--ray: the batch actors did not start within {START_SECONDS} s (each needs "
                        f"{threads} free CPUs of the cluster)") from None
    except ray.exceptions.RayError as error:
        done = progress.done if progress else 0
        raise AigcError(f"--ray: a batch actor failed ({error}); the {done} lines written are kept: "
                        "run the same command again to finish the rest") from None
    finally:
        if progress:
            progress.close()
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    return len(todo), skipped
