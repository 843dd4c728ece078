"""Engine: many callers (threads, asyncio) share one generator. Each request's tokens equal
the same request run alone; cancels free the KV blocks at once; a full queue refuses
with EngineOverloaded; a step that raises fails its requests, not the engine; close
finishes or cancels what was submitted."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")

from aigc_engine import AigcError, SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.serving.engine import (Engine, EngineClosed, EngineOverloaded, RequestCancelled,  # noqa: E402
                                RequestFailed)
from serve_fixtures import WAIT, install_gate, wait_until  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402

torch.set_num_threads(1)
CASES = [("gpt", "native"), ("lstm", "native"), ("lstm", "onnxruntime")]
PROMPTS = ["def add(a, b):", "class", "héllo wörld 😀", "x"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-engine")
    return {family: export_tiny(folder, family)[1] for family in ("gpt", "lstm")}


def params(seed: int, n: int = 12, **options) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0.9, top_p=0.95, seed=seed, ignore_eos=True, **options)


def free_blocks(engine: Engine) -> tuple[int, int]:
    stats = engine.stats()
    return stats["free_blocks"], stats["num_blocks"]


@pytest.mark.parametrize("family, backend", CASES)
def test_concurrent_callers_get_what_they_would_get_alone(paths, family, backend):
    generator = TextGenerator.load(str(paths[family]), backend=backend)
    jobs = [(PROMPTS[i % len(PROMPTS)], params(seed=i, n=8 + i, repetition_penalty=1.1 if i % 2 else 1.0))
            for i in range(12)]
    alone = [generator.generate(prompt, p)[0] for prompt, p in jobs]
    with Engine(generator) as engine, ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda job: engine.submit(*job).result(WAIT), jobs))
    assert [c.token_ids for c in results] == [c.token_ids for c in alone]
    assert [c.text for c in results] == [c.text for c in alone]
    assert len({tuple(c.token_ids) for c in results}) == len(jobs)  # the seeds differ


@pytest.mark.parametrize("family, backend", CASES)
def test_iterating_a_handle_streams_the_completion_text(paths, family, backend):
    with Engine.load(str(paths[family]), backend=backend) as engine:
        handle = engine.submit("héllo", params(seed=3, n=30))
        pieces = list(handle)
        assert len(pieces) > 1
        assert "".join(pieces) == handle.result(WAIT).text
        assert handle.result().finish_reason == "length"


def test_cancel_removes_the_request_and_frees_its_blocks_while_others_run(paths):
    generator = TextGenerator.load(str(paths["gpt"]))
    other_params = params(seed=8, n=20)
    expected = generator.generate("class", other_params)[0].token_ids
    gate = install_gate(generator).close()
    with Engine(generator) as engine:
        victim = engine.submit("def", params(seed=7, n=50))
        other = engine.submit("class", other_params)
        assert gate.reached.wait(WAIT)
        assert free_blocks(engine)[0] < free_blocks(engine)[1]  # both hold blocks now
        victim.cancel()
        gate.open()
        assert victim.wait(WAIT)
        with pytest.raises(RequestCancelled):
            victim.result()
        assert len(victim.request.generated) < 50  # cut short, not run to the end
        assert other.result(WAIT).token_ids == expected
        wait_until(lambda: engine.stats()["running"] == 0, "the batch to empty")
        assert free_blocks(engine)[0] == free_blocks(engine)[1]
        victim.cancel()  # no effect once done


def test_cancel_in_a_static_batch_drops_the_row(paths):
    generator = TextGenerator.load(str(paths["lstm"]), backend="onnxruntime")
    expected = generator.generate("class", params(seed=8, n=20))[0].token_ids
    gate = install_gate(generator).close()
    with Engine(generator) as engine:
        victim = engine.submit("def", params(seed=7, n=50))
        other = engine.submit("class", params(seed=8, n=20))
        assert gate.reached.wait(WAIT)
        victim.cancel()
        gate.open()
        with pytest.raises(RequestCancelled):
            victim.result(WAIT)
        assert len(victim.request.generated) < 50
        assert other.result(WAIT).token_ids == expected


@pytest.mark.parametrize("family, backend", CASES)
def test_a_full_queue_refuses_new_requests_and_loses_none(paths, family, backend):
    generator = TextGenerator.load(str(paths[family]), backend=backend)
    gate = install_gate(generator).close()
    with Engine(generator, max_queued=2) as engine:
        running = engine.submit("def", params(seed=1))
        assert gate.reached.wait(WAIT)  # the engine thread is held inside a step
        queued = [engine.submit("x", params(seed=2)), engine.submit("x", params(seed=3))]
        with pytest.raises(EngineOverloaded, match="max_queued=2"):
            engine.submit("x", params(seed=4))
        with pytest.raises(EngineOverloaded):  # all or none
            engine.submit_many(["a"], [params(seed=5)])
        gate.open()
        for handle in [running] + queued:
            assert handle.result(WAIT).finish_reason == "length"
        assert engine.submit("x", params(seed=4)).result(WAIT).finish_reason == "length"


def test_a_step_that_raises_fails_its_requests_not_the_engine(paths):
    generator = TextGenerator.load(str(paths["gpt"]))
    sample = generator.scheduler._sample

    def flaky(logits, requests):
        if any(r.seed == 666 and len(r.generated) == 3 for r in requests):
            raise RuntimeError("sampler exploded")
        sample(logits, requests)
    generator.scheduler._sample = flaky
    expected = generator.generate("class", params(seed=1))[0].token_ids
    with Engine(generator) as engine:
        bad = engine.submit("def", params(seed=666))
        with pytest.raises(RequestFailed, match="RuntimeError: sampler exploded"):
            bad.result(WAIT)
        assert engine.submit("class", params(seed=1)).result(WAIT).token_ids == expected
        assert free_blocks(engine)[0] == free_blocks(engine)[1]


def test_bad_input_raises_at_submit_and_queues_nothing(paths):
    with Engine.load(str(paths["gpt"])) as engine:
        with pytest.raises(AigcError, match="prompt: empty"):
            engine.submit("", params(seed=1))
        with pytest.raises(AigcError, match="exceed the model's context of 64"):
            engine.submit("def " * 40, params(seed=1, n=40))
        with pytest.raises(AigcError, match="need .* KV-cache blocks"):
            tight = Engine.load(str(paths["gpt"]), kv_cache_mb=2 * 2 * 16 * 32 * 4 * 2 / 2**20)  # two blocks
            try:
                tight.submit("def", params(seed=1, n=40))
            finally:
                tight.close()
        assert engine.queued == 0
        assert engine.submit([5, 6, 7], params(seed=1)).result(WAIT).prompt_tokens == 3


@pytest.mark.parametrize("family, backend", CASES)
def test_asyncio_face_shares_the_batch_and_cancels_on_leaving(paths, family, backend):
    generator = TextGenerator.load(str(paths[family]), backend=backend)
    expected = [generator.generate(p, params(seed=i))[0] for i, p in enumerate(PROMPTS)]

    async def main(engine):
        async def streamed(prompt, p):
            return "".join([piece async for piece in engine.astream(prompt, p)])
        results = await asyncio.gather(*[engine.agenerate(p, params(seed=i)) for i, p in enumerate(PROMPTS)],
                                       *[streamed(p, params(seed=i)) for i, p in enumerate(PROMPTS)])
        assert [c.token_ids for c in results[:4]] == [c.token_ids for c in expected]
        assert results[4:] == [c.text for c in expected]
        async for _ in engine.astream("def", params(seed=9, n=50)):
            break  # leaving the loop cancels the request
        task = asyncio.ensure_future(engine.agenerate("def", params(seed=9, n=50)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(AigcError, match="temperature"):
            await engine.agenerate("def", SamplingParams(temperature=-1))
    with Engine(generator) as engine:
        asyncio.run(asyncio.wait_for(main(engine), WAIT))
        wait_until(lambda: engine.queued == 0 and not engine._handles, "the cancelled requests to leave")
        if backend == "native":
            assert free_blocks(engine)[0] == free_blocks(engine)[1]


def test_close_finishes_what_was_submitted_then_refuses(paths):
    engine = Engine.load(str(paths["gpt"]))
    handles = [engine.submit(p, params(seed=i, n=20)) for i, p in enumerate(PROMPTS)]
    engine.close()
    assert all(h.done and h.result().finish_reason == "length" for h in handles)
    with pytest.raises(EngineClosed):
        engine.submit("def", params(seed=1))
    assert not engine._thread.is_alive()
    assert engine.generator.scheduler is None  # an engine that loaded its model releases it
    engine.close()  # twice is fine


@pytest.mark.parametrize("family, backend", CASES)
def test_close_with_cancel_cancels_running_and_queued(paths, family, backend):
    generator = TextGenerator.load(str(paths[family]), backend=backend)
    gate = install_gate(generator).close()
    engine = Engine(generator)
    running = engine.submit("def", params(seed=1, n=50))
    assert gate.reached.wait(WAIT)
    queued = engine.submit("x", params(seed=2, n=50))
    closer = threading.Thread(target=engine.close, kwargs={"cancel": True, "timeout": WAIT})
    closer.start()
    wait_until(lambda: engine._closing, "close() to start")
    gate.open()
    closer.join(WAIT)
    assert not closer.is_alive() and not engine._thread.is_alive()
    for handle in (running, queued):
        with pytest.raises(RequestCancelled, match="engine closed"):
            handle.result(0)
    if backend == "native":  # a generator passed in stays usable, its cache all free
        cache = generator.scheduler.backend.cache
        assert cache.free_blocks == cache.num_blocks
        assert generator.generate("x", params(seed=2))[0].finish_reason == "length"


def test_call_runs_between_steps_and_finish_listeners_see_successful_requests(paths):
    """Engine.call runs on the engine thread while a request is held mid-batch (the native
    model would refuse a second caller inside a step); listeners see finished requests only."""
    with Engine.load(str(paths["gpt"])) as engine:
        seen = []
        engine.add_finish_listener(lambda handle: seen.append((handle, threading.current_thread().name)))
        gate = install_gate(engine.generator).close()
        running = engine.submit("def", params(seed=1, n=20))
        assert gate.reached.wait(WAIT)
        called = engine.call(lambda: (threading.current_thread().name, running.done))
        gate.open()
        assert called.result(WAIT) == ("aigc-engine", False)
        running.result(WAIT)
        gate.close()
        cancelled = engine.submit("def", params(seed=2, n=20))
        assert gate.reached.wait(WAIT)
        cancelled.cancel()
        gate.open()
        assert cancelled.wait(WAIT) and cancelled.completion.finish_reason == ""
        with pytest.raises(ValueError, match="boom"):
            engine.call(lambda: int("boom")).result(WAIT)
        assert [(h, name) for h, name in seen] == [(running, "aigc-engine")]
        assert running.first_token_at is not None and running.submitted_at < running.first_token_at
    with pytest.raises(EngineClosed):
        engine.call(lambda: None)
