"""`aigc serve` for operators, over real HTTP on loopback: /v1/models/{id} through the openai
client, the API key (OpenAI's 401 body; /health and /metrics open), /metrics parsed by
prometheus_client's own parser (request counts, histograms and gauges against the engines'
stats), /tokenize and /detokenize against the tokenizer itself, CORS preflights, served
model names, and the rough edges: a field error's param, a model sent to the wrong route,
echo with logprobs (the prompt's tokens scored against torch), the command line's flags."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

from serve_fixtures import WAIT, Running, ends_cleanly_on_sigint, install_gate, wait_until  # noqa: E402
from text_fixtures import export_tiny, torch_logits  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from aigc_engine import ImageGenerator, TextGenerator  # noqa: E402
from aigc_engine.serving.app import Server  # noqa: E402
from aigc_engine.serving.engine import Engine  # noqa: E402
from aigc_engine.serving.run import load_models  # noqa: E402

torch.set_num_threads(1)
KEY = "sk-test-0123456789"
ALLOWED = "https://app.example.com"
TIGHT_KV_MB = 4 * 8192 / 2**20  # 4 KV blocks of the tiny GPT (2 layers × 16 tokens × 32 floats × K and V)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-ops")
    return {**{family: export_tiny(folder, family) for family in ("gpt", "lstm")},
            "gpt-prefixed": export_tiny(folder, "gpt", name="tiny-gpt-prefixed", prompt_prefix="\n")}


@pytest.fixture(scope="module")
def served(tiny):
    gpt, lstm = str(tiny["gpt"][1]), str(tiny["lstm"][1])
    text = {"gpt": Engine(TextGenerator.load(gpt)), "gpt-ort": Engine(TextGenerator.load(gpt, backend="onnxruntime")),
            "lstm": Engine(TextGenerator.load(lstm)),
            "gpt-tight": Engine(TextGenerator.load(gpt, kv_cache_mb=TIGHT_KV_MB)),
            "gpt-prefixed": Engine(TextGenerator.load(str(tiny["gpt-prefixed"][1])))}
    running = Running(Server(text, {"digits-dcgan": ImageGenerator.load("digits-dcgan")}, stream_interval=0.0,
                             api_key=KEY, allowed_origins=[ALLOWED]))
    yield running
    running.stop()


AUTH = {"Authorization": f"Bearer {KEY}"}


def post(served, path, body, headers=AUTH):
    return httpx.post(served.url + path, json=body, headers=headers, timeout=WAIT)


def get(served, path, headers=AUTH):
    return httpx.get(served.url + path, headers=headers, timeout=WAIT)


def client(served, key=KEY):
    return openai.OpenAI(base_url=served.url + "/v1", api_key=key, timeout=WAIT, max_retries=0)


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# /v1/models/{id} and the API key ------------------------------------------------------

def test_models_retrieve_with_the_openai_client(served):
    with client(served) as c:
        model = c.models.retrieve("gpt")
        assert model.id == "gpt" and model.object == "model" and model.owned_by == "aigc-engine"
        assert c.models.retrieve("digits-dcgan").id == "digits-dcgan"
        assert {m.id for m in c.models.list()} == {"gpt", "gpt-ort", "lstm", "gpt-tight", "gpt-prefixed",
                                                "digits-dcgan"}
        with pytest.raises(openai.NotFoundError, match="nope"):
            c.models.retrieve("nope")
    error = error_of(get(served, "/v1/models/nope"), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model" and "'nope'" in error["message"]


def test_the_api_key_guards_every_route_but_health_and_metrics(served):
    with client(served) as c:
        completion = c.completions.create(model="gpt", prompt="def", max_tokens=3, seed=1)
        assert completion.choices[0].text is not None and completion.usage.completion_tokens >= 1
    with client(served, key="sk-wrong") as c:
        with pytest.raises(openai.AuthenticationError, match="incorrect API key"):
            c.completions.create(model="gpt", prompt="def", max_tokens=3)
        with pytest.raises(openai.AuthenticationError):
            c.models.retrieve("gpt")
    missing = {"error": {"message": "missing API key: send the header 'Authorization: Bearer YOUR_KEY'",
                         "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    wrong = {"error": {"message": "incorrect API key provided", "type": "invalid_request_error", "param": None,
                       "code": "invalid_api_key"}}
    for path in ("/v1/models", "/v1/models/gpt"):
        assert get(served, path, headers={}).json() == missing
        assert get(served, path, headers={"Authorization": "Bearer sk-wrong"}).json() == wrong
        assert get(served, path, headers={"Authorization": f"Bearer {KEY}x"}).status_code == 401
        assert get(served, path, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    for path, body in (("/v1/completions", {"model": "gpt", "prompt": "x"}), ("/tokenize", {"prompt": "x"}),
                       ("/detokenize", {"tokens": [1]}), ("/v1/images/generations", {"model": "digits-dcgan"})):
        response = post(served, path, body, headers={})
        assert response.status_code == 401 and response.json() == missing
        assert response.headers["www-authenticate"] == "Bearer"
    assert get(served, "/v1/models", headers={"authorization": f"bearer {KEY}"}).status_code == 200  # any case
    assert get(served, "/health", headers={}).json()["status"] == "ok"
    assert get(served, "/metrics", headers={}).status_code == 200


# /metrics -------------------------------------------------------------------------

def scrape(served) -> dict:
    """{(sample name, sorted labels): value} from /metrics, read by prometheus_client's parser."""
    response = get(served, "/metrics", headers={})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in prometheus_parser.text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_by_route_and_status_and_observe_each_completion(served):
    before = scrape(served)
    body = {"model": "gpt", "prompt": "def", "max_tokens": 7, "seed": 3, "ignore_eos": True}
    assert post(served, "/v1/completions", body).json()["usage"]["completion_tokens"] == 7
    streamed = post(served, "/v1/completions", body | {"stream": True, "max_tokens": 5})
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    assert post(served, "/v1/completions", body | {"temperature": -1}).status_code == 400
    assert post(served, "/v1/completions", body, headers={}).status_code == 401
    assert get(served, "/v1/models/gpt").status_code == 200
    assert get(served, "/nowhere").status_code == 404
    after = scrape(served)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    route = {"route": "/v1/completions", "method": "POST"}
    assert delta("aigc_http_requests_total", status="200", **route) == 2
    assert delta("aigc_http_requests_total", status="400", **route) == 1
    assert delta("aigc_http_requests_total", status="401", **route) == 1
    assert delta("aigc_http_requests_total", route="/v1/models/{model_id}", method="GET", status="200") == 1
    assert delta("aigc_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert delta("aigc_http_requests_total", route="/metrics", method="GET", status="200") == 1  # the first scrape
    for histogram in ("aigc_time_to_first_token_seconds", "aigc_e2e_request_latency_seconds",
                      "aigc_generation_tokens"):
        assert delta(histogram + "_count", model="gpt") == 2
        assert delta(histogram + "_bucket", model="gpt", le="+Inf") == 2
    assert delta("aigc_generation_tokens_sum", model="gpt") == 7 + 5
    assert delta("aigc_generation_tokens_bucket", model="gpt", le="4.0") == 0
    assert delta("aigc_generation_tokens_bucket", model="gpt", le="8.0") == 2
    ttft, latency = (delta(name + "_sum", model="gpt") for name in ("aigc_time_to_first_token_seconds",
                                                                     "aigc_e2e_request_latency_seconds"))
    assert 0 < ttft <= latency


def test_metrics_gauges_are_the_engines_stats(served):
    engine = served.server.text["gpt"]
    gate = install_gate(engine.generator).close()
    body = {"model": "gpt", "prompt": "def", "max_tokens": 20, "seed": 1, "ignore_eos": True}
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, served, "/v1/completions", body)
            assert gate.reached.wait(WAIT)  # the engine thread is held inside a step: the first one runs
            second = pool.submit(post, served, "/v1/completions", body | {"seed": 2})
            wait_until(lambda: engine.stats()["queued"] == 1, "the second request to queue")
            samples, stats = scrape(served), engine.stats()
            gate.open()
            assert first.result(WAIT).status_code == 200 and second.result(WAIT).status_code == 200
    finally:
        gate.open()
        engine.generator.scheduler._sample = gate.sample
    assert stats["running"] == 1 and stats["queued"] == 1
    assert value(samples, "aigc_requests_waiting", model="gpt") == 1
    assert value(samples, "aigc_requests_running", model="gpt") == 1
    used = stats["num_blocks"] - stats["free_blocks"]
    assert used >= 1 and value(samples, "aigc_kv_cache_blocks_used", model="gpt") == used
    assert value(samples, "aigc_kv_cache_blocks_free", model="gpt") == stats["free_blocks"]
    idle = scrape(served)
    for name, engine in served.server.text.items():
        stats = engine.stats()
        assert value(idle, "aigc_requests_waiting", model=name) == 0
        assert value(idle, "aigc_requests_running", model=name) == 0
        if stats["backend"] == "native":
            assert value(idle, "aigc_kv_cache_blocks_free", model=name) == stats["num_blocks"]
            assert value(idle, "aigc_kv_cache_blocks_used", model=name) == 0
        else:  # onnxruntime: no paged cache, no series
            assert ("aigc_kv_cache_blocks_free", (("model", name),)) not in idle


def test_metrics_count_preemptions(served):
    """Two requests of 3 blocks each in a cache of 4: the later one is preempted, then
    recomputed, and ends as it would alone."""
    before = scrape(served)
    body = {"model": "gpt-tight", "prompt": "def", "max_tokens": 40, "seed": 5, "ignore_eos": True}
    both = post(served, "/v1/completions", body | {"n": 2}).json()["choices"]
    alone = [post(served, "/v1/completions", body | {"seed": 5 + i}).json()["choices"][0]["text"] for i in range(2)]
    assert [c["text"] for c in both] == alone
    preemptions = served.server.text["gpt-tight"].stats()["preemptions"]
    assert preemptions >= 1
    assert value(scrape(served), "aigc_preemptions_total", model="gpt-tight") == preemptions
    assert value(before, "aigc_preemptions_total", model="gpt-tight") < preemptions


# /tokenize and /detokenize --------------------------------------------------------------

TEXTS = ["def add(a, b):\n    return a + b", "héllo wörld 😀 中文", "", " leading space"]


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_tokenize_and_detokenize_equal_the_tokenizer_itself(served, model):
    generator = served.server.text[model].generator
    reference = Tokenizer.from_str(generator.artifact.tokenizer_json)
    for text in TEXTS:
        for special in (True, False):
            response = post(served, "/tokenize", {"model": model, "prompt": text, "add_special_tokens": special})
            assert response.status_code == 200, response.text
            ids = reference.encode(text, add_special_tokens=special).ids
            assert response.json() == {"tokens": ids, "count": len(ids),
                                       "max_model_len": generator.context_length}
            back = post(served, "/detokenize", {"model": model, "tokens": ids})
            assert back.json() == {"prompt": reference.decode(ids)} and reference.decode(ids) == text
    strs = post(served, "/tokenize", {"model": model, "prompt": "def f", "return_token_strs": True}).json()
    assert strs["token_strs"] == [reference.id_to_token(i) for i in strs["tokens"]]
    assert post(served, "/tokenize", {"model": model, "prompt": "x"}).json()["max_model_len"] == \
        (64 if model == "gpt" else 4096)


@pytest.mark.parametrize("path, body, status, param", [
    ("/detokenize", {"model": "gpt", "tokens": [1, 300]}, 400, "tokens"),
    ("/detokenize", {"model": "gpt", "tokens": [-1]}, 400, "tokens"),
    ("/detokenize", {"model": "gpt", "tokens": [1.5]}, 400, "tokens"),
    ("/detokenize", {"model": "gpt", "tokens": "12"}, 400, "tokens"),
    ("/detokenize", {"model": "gpt"}, 400, "tokens"),
    ("/tokenize", {"model": "gpt", "prompt": 5}, 400, "prompt"),
    ("/tokenize", {"model": "gpt"}, 400, "prompt"),
    ("/tokenize", {"model": "gpt", "prompt": "x", "add_special_tokens": "yes"}, 400, "add_special_tokens"),
    ("/tokenize", {"model": "gpt", "messages": [{"role": "user", "content": "x"}]}, 400, "messages"),
    ("/tokenize", {"prompt": "x"}, 400, "model"),  # several text models: which one
    ("/tokenize", {"model": "nope", "prompt": "x"}, 404, "model"),
    ("/tokenize", {"model": "digits-dcgan", "prompt": "x"}, 400, "model"),
])
def test_tokenize_and_detokenize_refuse_bad_bodies_by_field(served, path, body, status, param):
    error = error_of(post(served, path, body), status)
    assert error["param"] == param and param in error["message"]


def test_tokenize_takes_the_only_text_model_when_none_is_named(tiny):
    running = Running(Server({"only": Engine(TextGenerator.load(str(tiny["gpt"][1])))}, {}))
    try:
        response = httpx.post(running.url + "/tokenize", json={"prompt": "def"}, timeout=WAIT)
        assert response.json()["tokens"] == running.server.text["only"].generator.tokenizer.encode("def")
    finally:
        running.stop()


# CORS and served model names --------------------------------------------------------------

def test_cors_lets_the_allowed_origin_in_and_no_other(served):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(served.url + "/v1/completions", headers={"Origin": ALLOWED} | preflight, timeout=WAIT)
    assert allowed.status_code == 200  # answered before the key check: a preflight carries no key
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = httpx.options(served.url + "/v1/completions", headers={"Origin": "https://evil.example"} | preflight,
                          timeout=WAIT)
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    simple = get(served, "/v1/models", headers=AUTH | {"Origin": ALLOWED})
    assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == ALLOWED
    other = get(served, "/v1/models", headers=AUTH | {"Origin": "https://x.y"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_no_cors_headers_without_allowed_origins(tiny):
    running = Running(Server({"gpt": Engine(TextGenerator.load(str(tiny["gpt"][1])))}, {}))
    try:
        response = httpx.get(running.url + "/v1/models", headers={"Origin": ALLOWED}, timeout=WAIT)
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    finally:
        running.stop()


def test_served_model_names_are_what_clients_see_and_send(tiny):
    text, images = load_models([str(tiny["gpt"][1]), "digits-gan"], 8, ["acme/coder", "digits"])
    running = Running(Server(text, images))
    try:
        with openai.OpenAI(base_url=running.url + "/v1", api_key="unused", timeout=WAIT, max_retries=0) as c:
            assert sorted(m.id for m in c.models.list()) == ["acme/coder", "digits"]
            assert c.models.retrieve("acme/coder").id == "acme/coder"
            completion = c.completions.create(model="acme/coder", prompt="def", max_tokens=3, seed=1)
            assert completion.model == "acme/coder" and completion.usage.completion_tokens >= 1
            with pytest.raises(openai.NotFoundError):
                c.completions.create(model="tiny-gpt", prompt="def", max_tokens=3)
        assert httpx.post(running.url + "/v1/images/generations", json={"model": "digits", "seed": 1},
                          timeout=WAIT).status_code == 200
    finally:
        running.stop()
    with pytest.raises(ValueError, match="--served-model-name: 1 names for 2 models"):
        load_models([str(tiny["gpt"][1]), "digits-gan"], 8, ["one"])


# The command line -----------------------------------------------------------------------

def test_aigc_serve_with_a_key_from_the_environment_and_a_served_name(tiny):
    env = dict(os.environ, PYTHONUNBUFFERED="1", AIGC_API_KEY=KEY)
    process = subprocess.Popen([sys.executable, "-P", "-m", "aigc_engine.cli", "serve", str(tiny["gpt"][1]),
                                "--port", "0", "--served-model-name", "coder", "--allowed-origins", ALLOWED],
                               stderr=subprocess.PIPE, text=True, env=env)
    with ends_cleanly_on_sigint(process):
        line = process.stderr.readline()
        assert line.startswith("aigc serve: http://127.0.0.1:"), line
        url = line.split()[2]
        assert httpx.get(url + "/v1/models", timeout=WAIT).status_code == 401
        models = httpx.get(url + "/v1/models", headers=AUTH | {"Origin": ALLOWED}, timeout=WAIT)
        assert [m["id"] for m in models.json()["data"]] == ["coder"]
        assert models.headers["access-control-allow-origin"] == ALLOWED
        assert httpx.get(url + "/metrics", timeout=WAIT).status_code == 200


@pytest.mark.parametrize("args, env, message", [
    (["--api-key", ""], {}, "--api-key: empty"),
    (["--api-key", "two words"], {}, "--api-key: expected printable ASCII without spaces"),
    ([], {"AIGC_API_KEY": "clé"}, "AIGC_API_KEY: expected printable ASCII without spaces"),
    (["--served-model-name", "a", "b"], {}, "--served-model-name: 2 names for 1 models"),
    (["--served-model-name", " a"], {}, "--served-model-name: ' a' is not a usable name"),
    (["--allowed-origins", "https://x.com/"], {}, "--allowed-origins: expected '*' or an origin"),
    (["--allowed-origins", "x.com"], {}, "--allowed-origins: expected '*' or an origin"),
])
def test_aigc_serve_refuses_bad_operator_flags_in_one_line(args, env, message):
    result = subprocess.run([sys.executable, "-P", "-m", "aigc_engine.cli", "serve", "digits-gan", "--port", "0",
                             *args], capture_output=True, text=True, timeout=WAIT, env=dict(os.environ, **env))
    assert result.returncode == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


# Rough edges ------------------------------------------------------------------------------

@pytest.mark.parametrize("bias, message", [({"5": 101}, "logit_bias[5]"), ({"-1": 1}, "logit_bias token id"),
                                           ({"x": 1}, "logit_bias: keys must be token ids"),
                                           ({"5": "big"}, "logit_bias[5]"), ([1, 2], "logit_bias: expected")])
def test_every_logit_bias_error_names_its_param(served, bias, message):
    error = error_of(post(served, "/v1/completions", {"model": "gpt", "prompt": "x", "logit_bias": bias}), 400)
    assert error["param"] == "logit_bias" and message in error["message"]


def test_a_model_sent_to_the_wrong_route_gets_400_naming_the_right_one(served):
    error = error_of(post(served, "/v1/completions", {"model": "digits-dcgan", "prompt": "x"}), 400)
    assert error["param"] == "model" and "POST /v1/images/generations" in error["message"]
    error = error_of(post(served, "/v1/images/generations", {"model": "gpt", "prompt": "x"}), 400)
    assert error["param"] == "model" and "POST /v1/completions" in error["message"]
    with client(served) as c, pytest.raises(openai.BadRequestError, match="images/generations"):
        c.completions.create(model="digits-dcgan", prompt="x")


def reference_prompt_logprobs(model: torch.nn.Module, ids: list[int]) -> list[torch.Tensor]:
    """log_softmax of the torch model's logits after each prefix ids[:j], j = 1 .. len - 1."""
    return [torch.log_softmax(torch_logits(model, ids[:j]).double(), -1) for j in range(1, len(ids))]


@pytest.mark.parametrize("model_name, family", [("gpt", "gpt"), ("gpt-ort", "gpt"), ("lstm", "lstm")])
def test_echo_with_logprobs_scores_the_prompt_tokens(served, tiny, model_name, family):
    prompt = "def add(a, b):\n    return"
    ids = served.server.text[model_name].generator.tokenizer.encode(prompt)
    body = {"model": model_name, "prompt": prompt, "max_tokens": 4, "seed": 9, "logprobs": 3, "ignore_eos": True}
    plain = post(served, "/v1/completions", body).json()["choices"][0]
    echoed = post(served, "/v1/completions", body | {"echo": True}).json()["choices"][0]
    assert echoed["text"] == prompt + plain["text"]
    logprobs, generated = echoed["logprobs"], plain["logprobs"]
    assert len(logprobs["tokens"]) == len(ids) + 4
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert "".join(logprobs["tokens"][:len(ids)]) == prompt
    for key in ("tokens", "token_logprobs", "top_logprobs"):
        assert logprobs[key][len(ids):] == generated[key]
    offsets = logprobs["text_offset"]
    assert offsets[0] == 0 and offsets[len(ids)] == len(prompt)
    assert all(offsets[i + 1] == offsets[i] + len(logprobs["tokens"][i]) for i in range(len(offsets) - 1))
    tokenizer = served.server.text[model_name].generator.tokenizer
    for j, expected in enumerate(reference_prompt_logprobs(tiny[family][0], ids), start=1):
        assert logprobs["token_logprobs"][j] == pytest.approx(float(expected[ids[j]]), abs=2e-4)
        best = torch.topk(expected, 3)
        # keyed by text, as OpenAI's are: tokens of the same text share a key, the later one's value
        want = {tokenizer.token_text(int(i)): float(lp) for i, lp in zip(best.indices, best.values)}
        top = logprobs["top_logprobs"][j]
        assert list(top) == list(want) and list(top.values()) == pytest.approx(list(want.values()), abs=2e-4)


def test_echo_leaves_out_the_prompt_prefix_the_model_read(served, tiny):
    prompt = "def add(a, b):\n    return"
    generator = served.server.text["gpt-prefixed"].generator
    ids, prefix = generator.tokenizer.encode(prompt), generator.prompt_prefix_ids
    body = {"model": "gpt-prefixed", "prompt": prompt, "max_tokens": 2, "seed": 9, "logprobs": 0, "echo": True,
            "ignore_eos": True}
    reply = post(served, "/v1/completions", body).json()
    logprobs = reply["choices"][0]["logprobs"]
    assert reply["choices"][0]["text"].startswith(prompt) and reply["usage"]["prompt_tokens"] == len(ids)
    assert len(logprobs["tokens"]) == len(ids) + 2 and "".join(logprobs["tokens"][:len(ids)]) == prompt
    # every prompt token is scored after the prefix, the first one too
    reference = reference_prompt_logprobs(tiny["gpt-prefixed"][0], prefix + ids)[len(prefix) - 1:]
    for j, expected in enumerate(reference):
        assert logprobs["token_logprobs"][j] == pytest.approx(float(expected[ids[j]]), abs=2e-4)


def test_echo_with_logprobs_streams_the_prompt_entries_first(served):
    body = {"model": "gpt", "prompt": [5, 17, 42], "max_tokens": 3, "seed": 1, "logprobs": 0, "echo": True,
            "stream": True}
    events = [json.loads(line[6:]) for line in post(served, "/v1/completions", body).text.split("\n")
              if line.startswith("data: {")]
    first = events[0]["choices"][0]
    assert first["logprobs"]["token_logprobs"][0] is None and len(first["logprobs"]["tokens"]) == 3
    assert all(lp < 0 for lp in first["logprobs"]["token_logprobs"][1:])
    assert first["logprobs"]["top_logprobs"][1:] == [{}, {}]  # logprobs=0: the chosen token's only
    whole = post(served, "/v1/completions", body | {"stream": False}).json()["choices"][0]["logprobs"]
    assert whole["token_logprobs"][:3] == first["logprobs"]["token_logprobs"]
