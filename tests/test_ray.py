"""`aigc serve --ray` and `aigc batch --ray` on a real local Ray instance (2 CPUs, no
dashboard): two Serve replicas answer the openai client with the text TextGenerator gives
for the same seed, streamed or not; /health reports both; a replica killed under load fails
only its own requests, with a 5xx (or Ray's 408), and comes back; a batch over two actors gives the
in-process texts, and one killed half-way and run again names every custom_id once."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install '.[ray]'")
pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from ray import serve  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402

from aigc_engine import SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.serving.ray_serve import APP_NAME, DEPLOYMENT_NAME, deployment_options  # noqa: E402

pytestmark = pytest.mark.ray
WAIT = 90  # seconds: every wait here is bounded
MODEL = "tiny-gpt"
REPLICA_PREFIX = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT_NAME}#"


@pytest.fixture(scope="module")
def gpt_path(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny-ray"), "gpt")[1]


@pytest.fixture(scope="module")
def generator(gpt_path):
    return TextGenerator.load(str(gpt_path))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Ray puts the driver's working folder first on its workers' sys.path: from the source
    # folder they would import aigc_engine without its compiled extension.
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray-driver"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    finally:
        os.chdir(here)
    yield ray.get_runtime_context().gcs_address
    serve.shutdown()
    ray.shutdown()


def env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_names() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(REPLICA_PREFIX)]


def running_replicas() -> int:
    app = serve.status().applications.get(APP_NAME)
    return app.deployments[DEPLOYMENT_NAME].replica_states.get("RUNNING", 0) if app else 0


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="class")
def url(cluster, gpt_path, tmp_path_factory):
    """`aigc serve MODEL --ray --replicas 2` joined to the test's cluster; SIGINT at the end
    must delete its application and exit 0."""
    port, folder = free_port(), tmp_path_factory.mktemp("aigc-serve-ray")
    log = folder / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "aigc_engine.cli", "serve", str(gpt_path), "--ray",
                                    "--address", cluster, "--replicas", "2", "--port", str(port)],
                                   env=env(), cwd=folder, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until(lambda: "aigc serve: http://" in log.read_text() or process.poll() is not None,
                   "aigc serve --ray prints its address")
        assert process.poll() is None, log.read_text()
        assert f"http://127.0.0.1:{port} — Ray Serve, 2 replicas running" in log.read_text()
        yield f"http://127.0.0.1:{port}"
        process.send_signal(signal.SIGINT)
        assert process.wait(WAIT) == 0, log.read_text()[-2000:]
        assert APP_NAME not in serve.status().applications
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)


def client(url: str) -> "openai.OpenAI":
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=WAIT)


def expected(generator, prompt: str, seed: int, max_tokens: int) -> str:
    return generator.generate(prompt, SamplingParams(max_new_tokens=max_tokens, seed=seed))[0].text


class TestServeOnRay:
    """Through `aigc serve --ray` (the class's replicas are deleted before the batch tests)."""

    def test_completions_match_the_generator_streamed_or_not(self, url, generator):
        c = client(url)
        for seed in range(6):  # spread over both replicas by Serve's router
            prompt = f"def f{seed}("
            want = expected(generator, prompt, seed, 12)
            assert c.completions.create(model=MODEL, prompt=prompt, max_tokens=12, seed=seed).choices[0].text == want
            stream = c.completions.create(model=MODEL, prompt=prompt, max_tokens=12, seed=seed, stream=True)
            assert "".join(chunk.choices[0].text for chunk in stream) == want

    def test_chat_matches_the_generator_streamed_or_not(self, url, generator):
        c = client(url)
        messages = [{"role": "user", "content": "def add(a, b):"}]
        want = generator.chat(messages, SamplingParams(max_new_tokens=10, seed=3)).text
        reply = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, seed=3)
        assert reply.choices[0].message.content == want
        stream = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, seed=3, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == want


    def test_health_reports_every_replica(self, url):
        health = httpx.get(f"{url}/health", timeout=WAIT).json()
        assert health["status"] == "ok"
        assert health["deployment"]["replica_states"] == {"RUNNING": 2}
        replicas = health["replicas"]
        assert len({r["replica"] for r in replicas}) == 2
        assert sorted(r["replica"] for r in replicas) == sorted(name.rsplit("#", 1)[1] for name in replica_names())
        assert all(r["status"] == "ok" and r["models"][MODEL]["backend"] == "native" for r in replicas)
        # the engines' own routes still answer through the replicas
        assert httpx.get(f"{url}/v1/models", timeout=WAIT).json()["data"][0]["id"] == MODEL


    def test_a_killed_replica_fails_only_its_own_requests_and_comes_back(self, url, generator):
        outcomes, stop = [], threading.Event()
        want = {seed: expected(generator, f"x{seed} =", seed, 40) for seed in range(8)}

        def load(seed: int) -> None:
            c = client(url)
            while not stop.is_set():
                try:
                    stream = c.completions.create(model=MODEL, prompt=f"x{seed} =", max_tokens=40, seed=seed,
                                                  stream=True, extra_body={"ignore_eos": True})
                    text = "".join(chunk.choices[0].text for chunk in stream)
                    outcomes.append(("ok", text == want[seed]))
                except openai.APIStatusError as error:
                    outcomes.append(("status", error.status_code))
                except (openai.APIConnectionError, openai.APIError, httpx.HTTPError) as error:
                    outcomes.append(("broken", type(error).__name__))

        threads = [threading.Thread(target=load, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        before = len(outcomes)
        ray.kill(ray.get_actor(replica_names()[0], namespace="serve"), no_restart=True)
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(WAIT)
            assert not thread.is_alive(), "a client hung"
        after = outcomes[before:]
        assert before > 0 and sum(kind == "ok" for kind, _ in after) > len(threads), outcomes
        assert all(same for kind, same in outcomes if kind == "ok"), "a completed request's text differs"
        failed = [o for o in outcomes if o[0] != "ok"]
        assert len(failed) <= len(threads), failed  # at most what was in flight on the killed replica
        # 5xx, or 408: Ray's proxy maps a TimeoutError met while the killed replica is still
        # routed to into 408 (ray.serve's get_http_response_status). Both are retryable.
        assert all(code >= 500 or code == 408 for kind, code in failed if kind == "status"), failed
        wait_until(lambda: running_replicas() == 2, "Serve brings the replica back")
        wait_until(lambda: len(httpx.get(f"{url}/health", timeout=WAIT).json()["replicas"]) == 2, "/health sees 2")
        c = client(url)
        for seed in range(4):
            assert c.completions.create(model=MODEL, prompt=f"x{seed} =", max_tokens=40, seed=seed,
                                        extra_body={"ignore_eos": True}).choices[0].text == want[seed]


# Batch jobs: the serving application is deleted first, its replicas' CPUs freed for the actors.

def batch_line(i: int, max_tokens: int = 8) -> dict:
    return {"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
            "body": {"prompt": f"def g{i}(", "max_tokens": max_tokens, "seed": i}}


@pytest.fixture()
def cpus_free(cluster):
    wait_until(lambda: ray.available_resources().get("CPU", 0) >= 2, "the cluster's 2 CPUs are free")
    return cluster


def aigc_batch(address: str, gpt_path, folder, *extra: str) -> list[str]:
    return [sys.executable, "-m", "aigc_engine.cli", "batch", str(folder / "in.jsonl"), str(folder / "out.jsonl"),
            "--model", str(gpt_path), "--ray", "--address", address, "--replicas", "2", *extra]


def test_batch_over_two_actors_gives_the_in_process_texts(cpus_free, gpt_path, generator, tmp_path):
    lines = [batch_line(i) for i in range(12)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "{not json\n")
    run = subprocess.run(aigc_batch(cpus_free, gpt_path, tmp_path), capture_output=True, text=True, env=env(),
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote 13 lines" in run.stderr
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    by_id = {o["custom_id"]: o for o in out}
    assert len(out) == 13 and len(by_id) == 13  # 12 ids and the bad line's None, each once
    assert "not JSON" in by_id[None]["error"]["message"]
    for line in lines:
        body = line["body"]
        assert by_id[line["custom_id"]]["response"]["body"]["choices"][0]["text"] == \
            expected(generator, body["prompt"], body["seed"], body["max_tokens"])


def test_a_batch_killed_half_way_and_run_again_has_every_id_once(cpus_free, gpt_path, tmp_path):
    total = 600
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(batch_line(i, 40)) + "\n" for i in range(total)))
    output = tmp_path / "out.jsonl"
    job = subprocess.Popen(aigc_batch(cpus_free, gpt_path, tmp_path, "--concurrency", "2", "--quiet"), env=env(),
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: output.exists() and output.read_text().count("\n") >= 20 or job.poll() is not None,
                   "the job writes its first lines")
        job.send_signal(signal.SIGKILL)
    finally:
        job.kill()
        job.wait(WAIT)
    written = output.read_text().count("\n")
    assert 0 < written < total, f"killed after {written} of {total} lines: not half-way ({job.stderr.read()})"
    # its actors go with it: the cluster gets its CPUs back
    wait_until(lambda: ray.available_resources().get("CPU", 0) >= 2, "the killed job's actors are gone")
    run = subprocess.run(aigc_batch(cpus_free, gpt_path, tmp_path), capture_output=True, text=True, env=env(),
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    ids = [json.loads(line)["custom_id"] for line in output.read_text().splitlines()]
    assert sorted(ids) == sorted(f"r{i}" for i in range(total))  # each exactly once
    assert "already there were skipped" in run.stderr


def test_ray_flags_without_ray_are_refused(gpt_path, tmp_path):
    run = subprocess.run([sys.executable, "-m", "aigc_engine.cli", "serve", str(gpt_path), "--replicas", "2"],
                         capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=WAIT)
    assert run.returncode == 1 and "--replicas works with --ray only" in run.stderr


@pytest.mark.parametrize("flags, message", [
    (["--start-timeout", "30"], "--start-timeout works with --ray only"),
    (["--ray", "--start-timeout", "0"], "--start-timeout: expected seconds > 0, got 0.0"),
    (["--ray", "--start-timeout", "nan"], "--start-timeout: expected seconds > 0, got nan")])
def test_a_nonsense_start_timeout_is_refused_before_ray_starts(flags, message, gpt_path, tmp_path):
    run = subprocess.run([sys.executable, "-m", "aigc_engine.cli", "serve", str(gpt_path), *flags],
                         capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=WAIT)
    assert run.returncode == 1 and message in run.stderr, run.stderr[-2000:]


# A replica whose models never finish loading (a file on a hung network file system): Serve
# waits for it without a bound. (A proxy made never ready, RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S
# near 0, is no test: now and then it gets ready all the same.)
NEVER_READY = """
import sys, threading
from ray import serve
from aigc_engine.serving.ray_serve import DEPLOYMENT_NAME, serve_on_ray

class NeverReady:
    def __init__(self):
        threading.Event().wait()

serve_on_ray(serve.deployment(NeverReady, name=DEPLOYMENT_NAME, ray_actor_options={"num_cpus": 1}).bind(),
             None, "127.0.0.1", int(sys.argv[1]), 1, start_timeout=15)
"""


def test_a_start_that_never_gets_ready_ends_at_its_start_timeout(tmp_path):
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", NEVER_READY, str(free_port())], capture_output=True, text=True,
                         env=env(), cwd=tmp_path, timeout=3 * WAIT)
    assert run.returncode == 1, run.stderr[-2000:]
    # what it waited for: the replica (on a loaded machine, perhaps still the proxy, or a
    # controller too slow to say)
    assert re.search(r"--ray: not ready after --start-timeout 15 s: waiting for (the replicas \(1 STARTING\)|"
                     r"the HTTP proxy on node \w+ \(STARTING|Serve's controller \(no answer within 15 s\))",
                     run.stderr), run.stderr[-2000:]
    # Ray's start (slow beside the module's other instance), the 15 s, at most 15 s more asking
    # the controller and as many for its threads, and the local instance's stop
    assert time.monotonic() - started < 2 * WAIT


def test_a_controller_that_does_not_answer_is_named_within_seconds(monkeypatch):
    # A controller busy restarting a proxy may never answer Serve's client (a CI run's command
    # waited on it past 270 s): the failed start says so instead
    from ray import serve

    from aigc_engine.serving import ray_serve

    monkeypatch.setattr(serve, "status", lambda: threading.Event().wait())
    monkeypatch.setattr(ray_serve, "STATUS_TIMEOUT_SECONDS", 0.5)
    asked = time.monotonic()
    assert ray_serve.not_ready() == "Serve's controller (no answer within 0.5 s)"
    assert time.monotonic() - asked < 5


def test_unknown_models_are_refused_before_ray_starts(tmp_path):
    run = subprocess.run([sys.executable, "-m", "aigc_engine.cli", "serve", "no-such-model", "--ray"],
                         capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=WAIT)
    assert run.returncode == 1 and "unknown model 'no-such-model'" in run.stderr


@pytest.mark.parametrize("preset, expected", [(None, "60"), ("7", "7")])
def test_a_local_instance_gives_the_proxy_a_minute_unless_told_otherwise(preset, expected, tmp_path):
    # Serve's default (5 s) killed the proxy of `aigc serve --ray` on a 2-core machine busy training
    code = ("import os, ray; from aigc_engine.serving.ray_cluster import connect; assert connect(None, 1); "
            "print(os.environ['RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S']); ray.shutdown()")
    child = {k: v for k, v in env().items() if k != "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"}
    if preset is not None:
        child["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] = preset
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child, cwd=tmp_path,
                         timeout=WAIT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [expected]


def test_autoscaling_bounds_become_serves_autoscaling_config():
    from aigc_engine import AigcError
    from aigc_engine.serving.ray_serve import AigcReplica

    options = deployment_options(2, 1, 4, 1, 256, None)
    deployment = serve.deployment(serve.ingress()(AigcReplica), **options)  # Serve checks the options
    autoscaling = deployment._deployment_config.autoscaling_config  # no public getter in Serve
    assert (autoscaling.min_replicas, autoscaling.initial_replicas, autoscaling.max_replicas) == (1, 2, 4)
    assert autoscaling.target_ongoing_requests == 32  # a full batch per replica
    assert deployment.max_ongoing_requests == 256 + 32  # room for the engine's queue and a full batch
    assert deployment_options(3, None, None, 2, 256, 64) == {
        "name": DEPLOYMENT_NAME, "num_replicas": 3, "max_ongoing_requests": 320,
        "ray_actor_options": {"num_cpus": 2, "runtime_env": {"env_vars": {"AIGC_NUM_THREADS": "2"}}}}
    with pytest.raises(AigcError, match="--min-replicas 3 --max-replicas 2"):
        deployment_options(1, 3, 2, 1, 256, None)


@pytest.mark.parametrize("command", [["serve", "pycode-gpt", "--ray"], ["batch", "in.jsonl", "out.jsonl", "--model",
                                                                         "pycode-gpt", "--ray"]])
def test_without_the_ray_extra_the_error_names_it(command, tmp_path):
    code = "import sys; sys.modules['ray'] = None; from aigc_engine.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, env=env(),
                         cwd=tmp_path, timeout=WAIT)
    assert run.returncode == 1
    assert "--ray needs the 'ray' extra (ray is missing): pip install 'aigc-engine[ray]'" in run.stderr
