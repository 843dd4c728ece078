"""`aigc serve` against hostile clients, over real HTTP on 127.0.0.1: requests that could
never fit the queue (400 at once, before tokenising), bodies that broke the JSON parser
or the error path (deep nesting, huge integers, lone surrogates), slow or huge headers
and slow bodies (408/431 within the configured time), and a shutdown that cuts requests
short (JSON 503; a stream's error event, then its end). Timeouts are set short here so
every test runs in seconds."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from serve_fixtures import WAIT, Running, install_gate, wait_until
from text_fixtures import export_tiny

from aigc_engine import TextGenerator
from aigc_engine.serving.app import Server
from aigc_engine.serving.engine import Engine

SHORT = 0.5  # seconds: the header and body timeouts of these servers


@pytest.fixture(scope="module")
def gpt_path(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny-limits"), "gpt")[1]


@pytest.fixture(scope="module")
def running(gpt_path):
    engine = Engine(TextGenerator.load(str(gpt_path)), max_queued=256)
    server = Server({"gpt": engine}, {}, stream_interval=0.0, header_timeout=SHORT, body_timeout=SHORT,
                    max_header_bytes=8 << 10)
    running = Running(server)
    yield running
    running.stop()


def post(running, body=None, content=None, timeout=WAIT):
    return httpx.post(running.url + "/v1/completions", json=body, content=content, timeout=timeout)


def ok(running) -> str:
    response = post(running, {"model": "gpt", "prompt": "def", "max_tokens": 4, "seed": 1})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


# The queue ------------------------------------------------------------------------

@pytest.mark.parametrize("prompts, n", [(300, 1), (20, 16)])
def test_what_can_never_fit_the_queue_is_a_400_not_a_429(running, prompts, n):
    response = post(running, {"model": "gpt", "prompt": ["a"] * prompts, "n": n, "max_tokens": 1})
    error = error_of(response, 400)
    assert "Retry-After" not in response.headers
    assert "max_queued=256" in error["message"] and f"{prompts * n} requests" in error["message"]
    assert error["param"] == "prompt"


def test_a_huge_prompt_list_is_refused_at_once_and_health_stays_responsive(running):
    body = json.dumps({"model": "gpt", "prompt": ["a"] * 150_000, "n": 16}).encode()  # ~750 KB
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        refused = pool.submit(post, running, None, body)
        health = [httpx.get(running.url + "/health", timeout=WAIT).status_code for _ in range(3)]
        error = error_of(refused.result(WAIT), 400)
        seconds = time.monotonic() - started
    assert health == [200] * 3 and "2400000 requests" in error["message"]
    assert seconds < 5  # was 90 s of a blocked event loop (2.4 M requests tokenised first)


def test_what_could_fit_later_is_a_429_with_retry_after(running):
    engine = running.server.text["gpt"]
    body = {"model": "gpt", "prompt": "def", "max_tokens": 4, "seed": 1}
    engine.max_queued = 1
    gate = install_gate(engine.generator).close()
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, running, body)
            assert gate.reached.wait(WAIT)
            second = pool.submit(post, running, body)
            wait_until(lambda: engine.queued == 1, "the second request to queue")
            refused = post(running, body)
            assert error_of(refused, 429)["code"] == "overloaded" and int(refused.headers["Retry-After"]) >= 1
            never = post(running, body | {"prompt": ["a", "b"]})  # 2 > max_queued=1, busy or not
            assert "max_queued=1" in error_of(never, 400)["message"] and "Retry-After" not in never.headers
            gate.open()
            assert first.result(WAIT).status_code == second.result(WAIT).status_code == 200
    finally:
        gate.open()
        engine.generator.scheduler._sample = gate.sample
        engine.max_queued = 256


# Bodies ---------------------------------------------------------------------------

HOSTILE_BODIES = [
    (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    (b'{"model": "gpt", "prompt": "x", "stream_options": ' + b'{"a": ' * 40 + b"1" + b"}" * 41, "nests too deeply"),
    (b'{"model": "gpt", "prompt": "x", "seed": ' + b"9" * 5000 + b"}", "5000 digits"),
    (b'{"model": "gpt", "prompt": "x", "max_tokens": -' + b"1" * 5000 + b"}", "5000 digits"),
    (b'{"model": "gpt", "prompt": "x", "temperature": 1e999}', "too large for a float"),
    (b'{"model": "gpt", "prompt": "x", "temperature": NaN}', "NaN is not a JSON number"),
    (b'{"model": "\\ud800", "prompt": "x"}', "lone surrogate"),
    (b'{"model": "gpt", "prompt": "x", "\\udfff": 1}', "lone surrogate"),
    (b'{"model": "gpt", "prompt": ["ok", "\\ud800x"]}', "lone surrogate"),
    (b'{"model": "gpt", "prompt": "\xff"}', "not valid UTF-8"),
]


@pytest.mark.parametrize("content, message", HOSTILE_BODIES, ids=[m + str(i) for i, (_, m) in enumerate(HOSTILE_BODIES)])
def test_hostile_json_gets_a_json_400_naming_the_problem(running, content, message):
    error = error_of(post(running, content=content), 400)
    assert error["code"] == "invalid_json" and message in error["message"]
    assert ok(running)


def test_a_valid_surrogate_pair_is_text_not_an_error(running):
    response = post(running, content=b'{"model": "gpt", "prompt": "\\ud83d\\ude00", "max_tokens": 2}')
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("field, value", [("best_of", True), ("best_of", 1.0), ("n", True), ("seed", 1.5)])
def test_bools_and_floats_are_not_integers(running, field, value):
    error = error_of(post(running, {"model": "gpt", "prompt": "x", field: value}), 400)
    assert error["param"] == field


# Headers and slow clients -----------------------------------------------------------

def _exchange(running, data: bytes, wait: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes (bounded by `wait` seconds)."""
    with socket.create_connection(("127.0.0.1", running.port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
        return received


def test_slow_headers_get_408_and_the_connection_closes(running):
    started = time.monotonic()
    reply = _exchange(running, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    assert reply.startswith(b"HTTP/1.1 408 ") and b"header_timeout" in reply
    assert time.monotonic() - started < SHORT + 3


def test_many_slow_header_connections_all_close_and_the_server_carries_on(running):
    socks = []
    try:
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            socks.append(sock)
        time.sleep(SHORT + 0.5)
        for sock in socks:
            assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in socks:
            sock.close()
    assert ok(running)


def test_a_connection_that_sends_nothing_is_closed(running):
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("size", [9 << 10, 1 << 20])
def test_oversized_headers_get_431(running, size):
    data = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    reply = _exchange(running, data)
    assert reply.startswith(b"HTTP/1.1 431 ") and b"headers_too_large" in reply
    assert ok(running)


def test_headers_under_the_limit_are_fine_and_keep_alive_works(running):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 4000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(request)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_a_slow_body_gets_408(running):
    started = time.monotonic()
    reply = _exchange(running, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 100\r\n\r\n{\"model\":")
    assert reply.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in reply
    assert time.monotonic() - started < SHORT + 3


# Shutdown and the command line ------------------------------------------------------

def test_requests_cut_by_shutdown_get_a_json_503_and_streams_an_error_then_the_end(gpt_path):
    engine = Engine(TextGenerator.load(str(gpt_path)))
    running = Running(Server({"gpt": engine}, {}, stream_interval=0.0, graceful_shutdown=0.5))
    gate = install_gate(engine.generator).close()
    body = {"model": "gpt", "prompt": "def", "max_tokens": 50, "seed": 1, "ignore_eos": True}

    def stream():
        with httpx.stream("POST", running.url + "/v1/completions", json=body | {"stream": True},
                          timeout=WAIT) as response:
            return [line for line in response.iter_lines() if line]
    try:
        with ThreadPoolExecutor(2) as pool:
            waiting = pool.submit(post, running, body)
            assert gate.reached.wait(WAIT)
            streamed = pool.submit(stream)  # only now, so that it queues behind the held step
            wait_until(lambda: engine.queued == 1, "the second request to queue")
            stopper = threading.Thread(target=running.stop)
            stopper.start()
            wait_until(lambda: engine._closing, "the shutdown to cancel the requests")
            gate.open()
            error = error_of(waiting.result(WAIT), 503)
            events = streamed.result(WAIT)
            stopper.join(WAIT)
    finally:
        gate.open()
    assert error["code"] == "shutting_down" and "shutting down" in error["message"]
    assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["error"]["code"] == "shutting_down"


# One hostile request among sixteen ------------------------------------------------

HOSTILE_REQUESTS = [
    {"model": "gpt", "prompt": "def", "top_p": 1e-46},
    {"model": "gpt", "prompt": "def", "top_p": 5e-324},
    {"model": "gpt", "prompt": "def", "repetition_penalty": 1e-46},
    {"model": "gpt", "prompt": "def", "repetition_penalty": 1e-39},
    {"model": "gpt", "prompt": "def", "logit_bias": {"100000": 5}},
    {"model": "gpt", "prompt": [[1, 2, 100000]]},
    {"model": "gpt", "prompt": "def", "stop": ["x"] * 60_000},
    {"model": "gpt", "prompt": ["a"] * 20_000, "n": 16},
    {"model": "gpt", "prompt": "def", "max_tokens": 10**9},
    {"model": "gpt", "prompt": "def", "best_of": True},
]


@pytest.mark.parametrize("hostile", HOSTILE_REQUESTS, ids=[str(i) for i in range(len(HOSTILE_REQUESTS))])
def test_sixteen_requests_beside_a_hostile_one_get_the_text_they_get_alone(running, hostile):
    bodies = [{"model": "gpt", "prompt": f"def f{i}(", "max_tokens": 12, "seed": i, "temperature": 0.9,
               "repetition_penalty": 1.1} for i in range(16)]
    alone = [post(running, body).json()["choices"][0]["text"] for body in bodies]
    with ThreadPoolExecutor(17) as pool:
        answers = [pool.submit(post, running, body) for body in bodies[:8] + [hostile] + bodies[8:]]
        responses = [answer.result(WAIT) for answer in answers]
    assert error_of(responses[8], 400)["message"]
    assert [r.json()["choices"][0]["text"] for r in responses[:8] + responses[9:]] == alone
