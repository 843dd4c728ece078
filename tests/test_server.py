"""`aigc serve` over real HTTP on loopback: the official openai client (completions,
streaming, seeds), concurrent clients equal to the same requests alone, every kind of
bad request, clients that disconnect (their KV blocks are freed), overload (429 with
Retry-After), the images endpoint, and the command line's start and clean shutdown."""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from aigc_engine import ImageGenerator, SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.serving.engine import Engine  # noqa: E402
from aigc_engine.serving.app import Server
from aigc_engine.serving.run import bind, uvicorn_server  # noqa: E402
from serve_fixtures import WAIT, ends_cleanly_on_sigint, install_gate, wait_until  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-serve")
    return {family: export_tiny(folder, family)[1] for family in ("gpt", "lstm")}


@pytest.fixture(scope="module")
def served(paths):
    """The server in a background thread on a free loopback port; always shut down."""
    text = {"gpt": Engine(TextGenerator.load(str(paths["gpt"]))),
            "lstm": Engine(TextGenerator.load(str(paths["lstm"])))}
    server = Server(text, {"digits-gan": ImageGenerator.load("digits-gan")}, stream_interval=0.0)
    sock = bind("127.0.0.1", 0)
    runner = uvicorn_server(server)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d" % sock.getsockname()[1]
    wait_until(lambda: runner.started, "the server to start")
    yield url, server
    runner.should_exit = True
    thread.join(WAIT)
    sock.close()
    for engine in text.values():
        engine.close(cancel=True, timeout=WAIT)
    assert not thread.is_alive()


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served[0] + "/v1", api_key="unused", timeout=WAIT, max_retries=0)


_REFERENCE = {}


def alone(server, model, prompt, **options):
    """What the same request gives by itself, on a generator of its own (the served one
    belongs to its engine's thread)."""
    if model not in _REFERENCE:
        path = server.text[model].generator.artifact.path
        _REFERENCE[model] = TextGenerator.load(str(path), backend=server.text[model].generator.backend)
    return _REFERENCE[model].generate(prompt, SamplingParams(**options))[0]


def post(served, path, timeout=WAIT, **kwargs):
    return httpx.post(served[0] + path, timeout=timeout, **kwargs)


def test_openai_client_completions_equal_the_engine_alone(served, client):
    response = client.completions.create(model="gpt", prompt="def add(a, b):", max_tokens=12, temperature=0.8,
                                         seed=5, extra_body={"ignore_eos": True})
    expected = alone(served[1], "gpt", "def add(a, b):", max_new_tokens=12, temperature=0.8, seed=5, ignore_eos=True)
    (choice,) = response.choices
    assert choice.text == expected.text and choice.finish_reason == "length" and choice.index == 0
    assert response.object == "text_completion" and response.model == "gpt" and response.id.startswith("cmpl-")
    assert response.usage.completion_tokens == 12 and response.usage.prompt_tokens == expected.prompt_tokens
    again = client.completions.create(model="gpt", prompt="def add(a, b):", max_tokens=12, temperature=0.8,
                                      seed=5, extra_body={"ignore_eos": True})
    assert again.choices[0].text == choice.text


def test_several_prompts_n_choices_logprobs_and_token_ids(served, client):
    response = client.completions.create(model="gpt", prompt=["def", "class"], n=2, max_tokens=6, seed=10,
                                         logprobs=2, top_p=0.9, presence_penalty=0.5, frequency_penalty=0.3,
                                         extra_body={"ignore_eos": True, "top_k": 40, "min_p": 0.01,
                                                     "repetition_penalty": 1.2})
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    for choice, (prompt, seed) in zip(response.choices, [("def", 10), ("def", 11), ("class", 10), ("class", 11)]):
        expected = alone(served[1], "gpt", prompt, max_new_tokens=6, seed=seed, logprobs=2, top_p=0.9,
                         presence_penalty=0.5, frequency_penalty=0.3, top_k=40, min_p=0.01, repetition_penalty=1.2,
                         ignore_eos=True)
        assert choice.text == expected.text
        assert choice.logprobs.token_logprobs == pytest.approx([e.logprob for e in expected.logprobs])
        assert len(choice.logprobs.tokens) == 6 and all(len(top) <= 2 for top in choice.logprobs.top_logprobs)
    ids = served[1].text["gpt"].generator.tokenizer.encode("def")  # the tokenizer is thread-safe
    by_ids = client.completions.create(model="gpt", prompt=ids, max_tokens=6, seed=10, logprobs=2,
                                       top_p=0.9, presence_penalty=0.5, frequency_penalty=0.3,
                                       extra_body={"ignore_eos": True, "top_k": 40, "min_p": 0.01,
                                                   "repetition_penalty": 1.2})
    assert by_ids.choices[0].text == response.choices[0].text


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_streaming_with_the_openai_client(served, client, model):
    options = dict(model=model, prompt="héllo", max_tokens=24, seed=4, extra_body={"ignore_eos": True})
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **options))
    text_chunks = [c for c in chunks if c.choices]  # pieces produced between two wake-ups share a chunk
    assert "".join(c.choices[0].text for c in text_chunks) == client.completions.create(**options).choices[0].text
    assert [c.choices[0].finish_reason for c in text_chunks] == [None] * (len(text_chunks) - 1) + ["length"]
    assert chunks[-1].usage.completion_tokens == 24


def test_raw_stream_is_server_sent_events_ending_with_done(served):
    with httpx.stream("POST", served[0] + "/v1/completions", timeout=WAIT,
                      json={"model": "gpt", "prompt": "x", "max_tokens": 5, "stream": True, "seed": 1}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_stream_sends_text_while_the_request_still_runs(served):
    engine, gate = _hold_the_engine(served)
    gate.after = 4
    body = {"model": "gpt", "prompt": "def", "max_tokens": 30, "seed": 2, "ignore_eos": True, "stream": True}
    full = alone(served[1], "gpt", "def", max_new_tokens=30, seed=2, ignore_eos=True).text
    try:
        with httpx.stream("POST", served[0] + "/v1/completions", json=body, timeout=WAIT) as response:
            lines = response.iter_lines()
            first = json.loads(next(line for line in lines if line)[6:])
            assert not gate.opened.is_set()  # so the request is still running: it holds at token 4 of 30
            assert first["choices"][0]["text"] and full.startswith(first["choices"][0]["text"])
            assert first["choices"][0]["finish_reason"] is None
            _release(engine, gate)
            rest = [json.loads(line[6:]) for line in lines if line and line != "data: [DONE]"]
    finally:
        _release(engine, gate)
    assert "".join(c["choices"][0]["text"] for c in [first] + rest) == full


def test_stream_interval_sends_the_text_made_meanwhile_in_one_event_and_the_end_at_once(served):
    url, server = served
    options = {"model": "gpt", "prompt": "def", "max_tokens": 20, "seed": 3, "ignore_eos": True}
    full = post(served, "/v1/completions", json=options).json()["choices"][0]["text"]
    server.stream_interval = 10.0  # the tiny model makes 20 tokens well within it
    try:
        started = time.monotonic()
        with httpx.stream("POST", url + "/v1/completions", json=options | {"stream": True}, timeout=WAIT) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line and line != "data: [DONE]"]
        seconds = time.monotonic() - started
    finally:
        server.stream_interval = 0.0
    texts = [event["choices"][0]["text"] for event in events]
    assert "".join(texts) == full and len(texts) <= 3  # the first piece at once, the rest together
    assert seconds < 5  # the end is not held back until the next tick
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_concurrent_clients_get_what_they_would_get_alone(served):
    jobs = [(model, prompt, seed) for model in ("gpt", "lstm") for prompt in ("def", "class", "x") for seed in (1, 2)]

    def one(job):
        model, prompt, seed = job
        with openai.OpenAI(base_url=served[0] + "/v1", api_key="unused", timeout=WAIT, max_retries=0) as c:
            stream = seed == 2  # half of them streamed
            response = c.completions.create(model=model, prompt=prompt, max_tokens=10 + seed, seed=seed,
                                            temperature=1.0, stream=stream, extra_body={"ignore_eos": True})
            return "".join(chunk.choices[0].text for chunk in response) if stream else response.choices[0].text
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(one, jobs))
    expected = [alone(served[1], m, p, max_new_tokens=10 + s, seed=s, temperature=1.0, ignore_eos=True).text
                for m, p, s in jobs]
    assert texts == expected


BAD_REQUESTS = [
    ({"content": b"{not json"}, 400, "invalid_json", None),
    ({"content": b"[1, 2]"}, 400, "invalid_json", None),
    ({"json": {"model": "nope", "prompt": "x"}}, 404, "model_not_found", "model"),
    ({"json": {"model": "digits-gan", "prompt": "x"}}, 400, "wrong_model_kind", "model"),
    ({"json": {"prompt": "x"}}, 400, None, "model"),
    ({"json": {"model": "gpt"}}, 400, None, "prompt"),
    ({"json": {"model": "gpt", "prompt": ""}}, 400, None, "prompt"),
    ({"json": {"model": "gpt", "prompt": [1, "a"]}}, 400, None, "prompt"),
    ({"json": {"model": "gpt", "prompt": [[1, 2], [999999]]}}, 400, None, "prompt"),
    ({"json": {"model": "gpt", "prompt": "x", "temperature": -0.5}}, 400, None, "temperature"),
    ({"json": {"model": "gpt", "prompt": "x", "top_p": 0}}, 400, None, "top_p"),
    ({"json": {"model": "gpt", "prompt": "x", "max_tokens": 0}}, 400, None, "max_tokens"),
    ({"json": {"model": "gpt", "prompt": "x", "n": 0}}, 400, None, "n"),
    ({"json": {"model": "gpt", "prompt": "x", "logprobs": 21}}, 400, None, "logprobs"),
    ({"json": {"model": "gpt", "prompt": "x", "seed": -1}}, 400, None, "seed"),
    ({"json": {"model": "gpt", "prompt": "x", "stop": [""]}}, 400, None, "stop"),
    ({"json": {"model": "gpt", "prompt": "x", "presence_penalty": 3}}, 400, None, "presence_penalty"),
    ({"json": {"model": "gpt", "prompt": "x", "stream": "yes"}}, 400, None, "stream"),
    ({"json": {"model": "gpt", "prompt": "x", "frobnicate": 1}}, 400, None, "frobnicate"),
    ({"json": {"model": "gpt", "prompt": "def " * 40, "max_tokens": 40}}, 400, "context_length_exceeded", "prompt"),
    ({"content": b'{"model": "gpt", "prompt": "' + b"x" * (1 << 20) + b'"}'}, 413, "body_too_large", None),
]


@pytest.mark.parametrize("request_, status, code, param", BAD_REQUESTS,
                         ids=[f"{i}-{case[1]}-{case[3] or case[2]}" for i, case in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_an_openai_style_error_and_the_server_carries_on(served, request_, status, code, param):
    response = post(served, "/v1/completions", **request_)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param and (code is None or error["code"] == code)
    if param:
        assert param in error["message"]
    assert post(served, "/v1/completions", json={"model": "gpt", "prompt": "x", "max_tokens": 2}).status_code == 200


def test_errors_name_settings_as_a_request_body_writes_them(served):
    response = post(served, "/v1/completions", json={"model": "gpt", "prompt": "def " * 40, "max_tokens": 40})
    message = response.json()["error"]["message"]
    assert '("truncate_prompt": true keeps the last' in message and "max_tokens 40" in message
    assert "max_new_tokens" not in message and "truncate_prompt=True" not in message


def test_token_healing_is_a_request_field(served, client):
    options = dict(model="gpt", prompt="def ", max_tokens=5, seed=3, temperature=0.9)
    healed = client.completions.create(**options)
    plain = client.completions.create(**options, extra_body={"token_healing": False})
    assert healed.usage.prompt_tokens == plain.usage.prompt_tokens - 1
    assert post(served, "/v1/completions", json=options | {"token_healing": "no"}).json()["error"]["param"] == \
        "token_healing"


def test_openai_client_sees_the_errors(client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="gpt", prompt="x", temperature=101)
    with pytest.raises(openai.NotFoundError, match="nope"):
        client.completions.create(model="nope", prompt="x")


def test_models_health_and_unknown_routes(served, client):
    assert sorted(m.id for m in client.models.list()) == ["digits-gan", "gpt", "lstm"]
    health = httpx.get(served[0] + "/health", timeout=WAIT).json()
    assert health["status"] == "ok" and health["models"]["gpt"]["backend"] == "native"
    response = httpx.get(served[0] + "/v1/nothing", timeout=WAIT)
    assert response.status_code == 404 and "error" in response.json()
    assert httpx.get(served[0] + "/v1/completions", timeout=WAIT).status_code == 405


def _hold_the_engine(served, model="gpt"):
    engine = served[1].text[model]
    return engine, install_gate(engine.generator).close()


def _release(engine, gate):
    gate.open()
    engine.generator.scheduler._sample = gate.sample


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_cancels_its_request_and_frees_its_blocks(served, stream):
    engine, gate = _hold_the_engine(served)
    try:
        body = json.dumps({"model": "gpt", "prompt": "def", "max_tokens": 50, "seed": 3, "ignore_eos": True,
                           "stream": stream}).encode()
        host, port = served[0].removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=WAIT) as leaver:  # sends, then goes away
            leaver.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
            assert gate.reached.wait(WAIT)
            assert engine.stats()["free_blocks"] < engine.stats()["num_blocks"]
        wait_until(lambda: engine._cancels, "the server to cancel the request")
    finally:
        _release(engine, gate)
    wait_until(lambda: engine.stats()["running"] == 0, "the request to leave the batch")
    stats = engine.stats()
    assert stats["free_blocks"] == stats["num_blocks"]
    (request,) = set(gate.seen)
    assert len(request.generated) < 50 and not request.finished  # cut short by the cancel


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_overload_gets_429_with_retry_after_and_loses_nothing(served, model):
    engine, gate = _hold_the_engine(served, model)
    engine.max_queued = 1
    body = {"model": model, "prompt": "def", "max_tokens": 4, "seed": 1}
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, served, "/v1/completions", json=body)
            assert gate.reached.wait(WAIT)
            second = pool.submit(post, served, "/v1/completions", json=body)
            wait_until(lambda: engine.queued == 1, "the second request to queue")
            refused = post(served, "/v1/completions", json=body)
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["code"] == "overloaded"
            _release(engine, gate)
            assert first.result(WAIT).status_code == second.result(WAIT).status_code == 200
            assert first.result().json()["choices"][0]["text"] == second.result().json()["choices"][0]["text"]
    finally:
        _release(engine, gate)
        engine.max_queued = 256


def test_images_are_pngs_of_the_models_size(served):
    response = post(served, "/v1/images/generations", json={"model": "digits-gan", "n": 3, "seed": 7,
                                                              "truncation": 1.5, "response_format": "b64_json"})
    assert response.status_code == 200
    pngs = [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]
    images = [np.asarray(Image.open(io.BytesIO(png))) for png in pngs]
    assert [im.shape for im in images] == [(28, 28)] * 3 and all(png.startswith(b"\x89PNG") for png in pngs)
    expected = ImageGenerator.load("digits-gan").sample(3, 7, 1.5)
    assert all(np.array_equal(im, want[..., 0]) for im, want in zip(images, expected))
    for body, status, param in [({"model": "digits-gan", "n": 0}, 400, "n"),
                                ({"model": "digits-gan", "truncation": -1}, 400, "truncation"),
                                ({"model": "digits-gan", "response_format": "url"}, 400, "response_format"),
                                ({"model": "digits-gan", "size": "64x64"}, 400, "size"),
                                ({"model": "gpt"}, 400, "model"), ({"model": "nope"}, 404, "model")]:
        response = post(served, "/v1/images/generations", json=body)
        assert response.status_code == status and response.json()["error"]["param"] == param


def test_aigc_serve_starts_serves_and_shuts_down_cleanly(paths):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-P", "-m", "aigc_engine.cli", "serve", str(paths["gpt"]),
                                "digits-vae", "--port", "0", "--max-queued", "4"],
                               stderr=subprocess.PIPE, text=True, env=env)
    with ends_cleanly_on_sigint(process):
        line = process.stderr.readline()
        assert line.startswith("aigc serve: http://127.0.0.1:"), line
        url = line.split()[2]
        models = httpx.get(url + "/v1/models", timeout=WAIT).json()
        assert sorted(m["id"] for m in models["data"]) == ["digits-vae", "tiny-gpt"]
        response = httpx.post(url + "/v1/completions", json={"model": "tiny-gpt", "prompt": "x", "max_tokens": 3},
                              timeout=WAIT)
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=WAIT)


def test_aigc_serve_refuses_bad_arguments_in_one_line():
    def run(*args):
        return subprocess.run([sys.executable, "-P", "-m", "aigc_engine.cli", "serve", *args],
                              capture_output=True, text=True, timeout=WAIT)
    result = run("no-such-model", "--port", "0")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "unknown model 'no-such-model'" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("digits-gan", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 1 and "cannot bind" in result.stderr and result.stderr.count("\n") == 1
    for flag, value, message in [("--stream-interval", "-1", "--stream-interval: expected 0..10 seconds, got -1"),
                                 ("--stream-interval", "nan", "--stream-interval: expected 0..10 seconds"),
                                 ("--max-body-bytes", "-1", "--max-body-bytes: expected an integer >= 1, got -1"),
                                 ("--max-body-bytes", "0", "--max-body-bytes: expected an integer >= 1, got 0"),
                                 ("--max-queued", "0", "--max-queued: expected an integer >= 1, got 0"),
                                 ("--max-batch-size", "0", "--max-batch-size: expected an integer >= 1, got 0"),
                                 ("--kv-cache-mb", "-5", "--kv-cache-mb: expected a number of MiB > 0, got -5"),
                                 ("--kv-cache-mb", "inf", "--kv-cache-mb: expected a number of MiB > 0"),
                                 ("--port", "70000", "--port: expected 0..65535")]:
        result = run("digits-gan", "--port", "0", flag, value)
        assert result.returncode == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_aigc_serve_warns_when_listening_beyond_loopback():
    process = subprocess.Popen([sys.executable, "-P", "-m", "aigc_engine.cli", "serve", "digits-gan", "--host",
                                "0.0.0.0", "--port", "0"], stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    with ends_cleanly_on_sigint(process):
        line = process.stderr.readline()
        assert line.startswith("aigc serve: http://0.0.0.0:"), line
        warning = process.stderr.readline()
        assert "warning" in warning and "anyone who can reach" in warning
        port = line.split()[2].rsplit(":", 1)[1]  # uvicorn handles SIGINT once it answers
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=WAIT).status_code == 200
