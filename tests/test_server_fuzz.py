"""Random request bodies against the real app, in-process (httpx's ASGI transport): every
known field of /v1/completions, /v1/chat/completions and /v1/images/generations filled with random JSON,
plausible values, wrong types and huge numbers, unknown fields, deep nesting, invalid
UTF-8 and lone surrogates, bodies that are not JSON at all. Every answer is a JSON error
(400/404/413/422/429) or a valid 200 body, never a 500, never a hang; and a valid
request right after still gets the text it got before."""

import asyncio
import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from text_fixtures import export_tiny

from aigc_engine import ImageGenerator, TextGenerator
from aigc_engine.serving.app import Server
from aigc_engine.serving.chat import CHAT_FIELDS
from aigc_engine.serving.engine import Engine
from aigc_engine.serving.params import COMPLETION_FIELDS, IMAGE_FIELDS

ANSWER_SECONDS = 30  # per request: longer is a hang
ERRORS = {400, 404, 413, 422, 429}
VALID = {"model": "gpt", "prompt": "def", "max_tokens": 6, "seed": 3, "ignore_eos": True}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    path = export_tiny(tmp_path_factory.mktemp("tiny-fuzz"), "gpt")[1]
    engine = Engine(TextGenerator.load(str(path)), max_queued=32)
    server = Server({"gpt": engine}, {"digits-gan": ImageGenerator.load("digits-gan")}, stream_interval=0.0,
                    max_body_bytes=64 << 10)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url="http://fuzz")

    def send(path: str, content: bytes) -> httpx.Response:
        request = client.post(path, content=content, headers={"content-type": "application/json"})
        return loop.run_until_complete(asyncio.wait_for(request, ANSWER_SECONDS))
    reference = send("/v1/completions", json.dumps(VALID).encode())
    assert reference.status_code == 200
    yield send, reference.json()["choices"][0]["text"]
    loop.run_until_complete(client.aclose())
    loop.close()
    engine.close(cancel=True, timeout=30)


scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
PLAUSIBLE = {
    "model": st.sampled_from(["gpt", "digits-gan", "nope", ""]),
    "prompt": (st.text(max_size=16) | st.lists(st.text(max_size=8), max_size=40)
               | st.lists(st.integers(-1, 400), max_size=8) | st.lists(st.lists(st.integers(0, 300), max_size=4),
                                                                      max_size=4)),
    "n": st.integers(-1, 20), "best_of": st.integers(0, 3), "max_tokens": st.integers(-1, 24),
    "seed": st.integers(-1, 2**64), "temperature": st.floats(-1, 3), "top_p": st.floats(-0.5, 1.5),
    "top_k": st.integers(-1, 50), "min_p": st.floats(-0.5, 1.5), "logprobs": st.integers(-1, 25),
    "stream": st.booleans(), "echo": st.booleans(), "stream_options": st.fixed_dictionaries(
        {"include_usage": st.booleans()}), "stop": st.lists(st.text(max_size=4), max_size=5) | st.text(max_size=4),
    "logit_bias": st.dictionaries(st.integers(-1, 400).map(str), st.floats(-100, 100), max_size=3),
    "truncation": st.floats(-1, 3), "size": st.sampled_from(["28x28", "64x64", "x"]),
    "response_format": st.sampled_from(["b64_json", "url"]),
    "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "bot"]),
         "content": st.text(max_size=12) | st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                          "text": st.text(max_size=6)}), max_size=2)},
        optional={"name": st.text(max_size=4)}), max_size=4),
    "top_logprobs": st.integers(-1, 25), "max_completion_tokens": st.integers(-1, 24),
}


def field_values(name: str):
    return json_values | PLAUSIBLE.get(name, json_values)


def bodies(fields: set[str], model: str):
    known = st.fixed_dictionaries({}, optional={name: field_values(name) for name in sorted(fields)})
    unknown = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in fields), json_values,
                              max_size=2)
    objects = st.builds(lambda k, u, keep: {"model": model} | k | u if keep else k | u, known,
                        st.just({}) | unknown, st.booleans())
    encoded = objects.flatmap(lambda body: st.sampled_from([
        json.dumps(body).encode(), json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")]))
    raw = st.sampled_from([
        b"", b"null", b"[]", b'"x"', b"[" * 5000 + b"]" * 5000, b'{"model": "\\ud800"}', b'{"\\udc00": 1}',
        b'{"seed": ' + b"7" * 5000 + b"}", b'{"model": "gpt", "prompt": "\xc3\x28"}', b"{\"a\": NaN}",
        b'{"model": "gpt", "prompt": "x", "temperature": -1e400}', b"\xff\xfe{}",
    ]) | st.binary(max_size=64)
    spliced = st.tuples(objects, st.sampled_from(['"\\ud83d"', '"\\udfff x"', "1e999", "9" * 400, "[[[[[[[[]]]]]]]]"]),
                        st.sampled_from(sorted(fields))).map(
        lambda t: json.dumps(t[0] | {t[2]: "SPLICE"}).replace('"SPLICE"', t[1]).encode())
    return encoded | raw | spliced


def check(response: httpx.Response, path: str) -> None:
    assert response.status_code in ERRORS | {200}, (response.status_code, response.text[:300])
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [line for line in response.text.split("\n") if line]
        assert events[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in events)
        for line in events[:-1]:
            assert "error" not in json.loads(line[6:])
        return
    body = response.json()
    assert body["data"] if path == "/v1/images/generations" else body["choices"]


FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(content=bodies(COMPLETION_FIELDS, "gpt"))
def test_completions_answer_every_body_with_json(app, content):
    send, text = app
    check(send("/v1/completions", content), "/v1/completions")
    after = send("/v1/completions", json.dumps(VALID).encode())
    assert after.status_code == 200 and after.json()["choices"][0]["text"] == text


@FUZZ
@given(content=bodies(CHAT_FIELDS, "gpt"))
def test_chat_completions_answer_every_body_with_json(app, content):
    send, text = app
    check(send("/v1/chat/completions", content), "/v1/chat/completions")
    after = send("/v1/completions", json.dumps(VALID).encode())
    assert after.status_code == 200 and after.json()["choices"][0]["text"] == text


@FUZZ
@given(content=bodies(IMAGE_FIELDS, "digits-gan"))
def test_images_answer_every_body_with_json(app, content):
    send, text = app
    check(send("/v1/images/generations", content), "/v1/images/generations")
    after = send("/v1/completions", json.dumps(VALID).encode())
    assert after.status_code == 200 and after.json()["choices"][0]["text"] == text
