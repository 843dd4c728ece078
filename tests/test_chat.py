"""Chat: templates rendered as transformers' apply_chat_template renders them (the same
strings, the same token ids), a Hugging Face folder's template carried through import-hf,
/v1/chat/completions through the official openai client (streaming, n, seeds, stop,
logprobs, logit_bias, max_completion_tokens, include_usage; replies equal TextGenerator
on the prompt written out by hand), its 400s (tools, bad messages), `aigc serve
--chat-template`, and `aigc chat` over piped stdin."""

import json
import os
import subprocess
import sys
import threading

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import aigc_export  # noqa: E402
import jinja2  # noqa: E402
from aigc_engine import AigcError, ModelFileError, SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.serving.app import Server  # noqa: E402
from aigc_engine.serving.engine import Engine  # noqa: E402
from aigc_engine.serving.run import bind, uvicorn_server  # noqa: E402
from aigc_engine.text.chat_template import (  # noqa: E402
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplate,
    MessageError,
    hf_chat_template,
)
from serve_fixtures import WAIT, ends_cleanly_on_sigint, wait_until  # noqa: E402
from hf_fixtures import save_gpt2  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402

torch.set_num_threads(1)
os.environ["HF_HUB_OFFLINE"] = "1"  # transformers reads only the folders the tests write

# ChatML, as many Hub models write it: raise_exception, trim_blocks/lstrip_blocks whitespace,
# a {% generation %} block, bos_token.
CHATML = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] == 'system' and not loop.first %}
        {{ raise_exception('the system message must come first') }}
    {% endif %}
    {{ '<|im_start|>' + message['role'] + '\\n' }}
    {%- if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim }}{% endgeneration %}
    {%- else %}{{ message['content'] | trim }}{% endif %}
    {{ '<|im_end|>\\n' }}
{% endfor %}
{% if add_generation_prompt %}
    {{ '<|im_start|>assistant\\n' }}
{% endif %}"""
# tojson (non-ASCII kept), namespace, loop controls, a message's name, eos_token, strftime_now.
OTHERS = """{% set ns = namespace(users=0) %}
{% for m in messages %}
{% if m.role == 'user' %}{% set ns.users = ns.users + 1 %}{% endif %}
{% if m.content == 'skip me' %}{% continue %}{% endif %}
{{ m | tojson }}{% if m.name is defined %} ({{ m.name }}){% endif %}
{% if m.content == 'stop here' %}{% break %}{% endif %}
{% endfor %}
users={{ ns.users }}{{ eos_token }}{{ strftime_now('') }}"""
CONVERSATION = [{"role": "system", "content": "You answer in Python."},
                {"role": "user", "content": "  Héllo, wörld 😀 \n"},
                {"role": "assistant", "content": " def greet(): pass "},
                {"role": "user", "content": "skip me", "name": "ann"},
                {"role": "developer", "content": "stop here"},
                {"role": "user", "content": "never shown"}]


def hf_tokenizer(folder, template):
    """transformers' own tokenizer for a folder, with `template` as its chat template."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    tokenizer.chat_template = template
    return tokenizer


def hf_render(tokenizer, messages, tokenize=False):
    out = tokenizer.apply_chat_template(messages, tokenize=tokenize, add_generation_prompt=True)
    return out if not tokenize or isinstance(out, list) else out["input_ids"]


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A GPT-2 folder as transformers saves it, with a ChatML tokenizer_config.json, imported."""
    folder = tmp_path_factory.mktemp("hf-chat")
    save_gpt2(folder, 1, 2, 32, 128)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
        "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "special": True}, "chat_template": CHATML}))
    return folder, aigc_export.import_hf(folder, folder.parent / "hf-chat.onnx")


@pytest.mark.parametrize("template", [CHATML, OTHERS, DEFAULT_CHAT_TEMPLATE], ids=["chatml", "others", "default"])
def test_templates_render_as_transformers_renders_them(hf_model, template):
    folder, _ = hf_model
    tokenizer = hf_tokenizer(folder, template)
    ours = ChatTemplate(template, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
    conversations = [CONVERSATION[:1] + CONVERSATION[1:2], CONVERSATION[1:3], CONVERSATION]
    if template == CHATML:  # system second: the template refuses, in both
        conversations = conversations[:2]
    for messages in conversations:
        assert ours.render(messages) == hf_render(tokenizer, messages)


def test_a_hugging_face_folders_template_survives_import(hf_model):
    folder, path = hf_model
    generator = TextGenerator.load(str(path))
    tokenizer = hf_tokenizer(folder, CHATML)
    for messages in (CONVERSATION[:3], [{"role": "user", "content": "<|endoftext|> def"}]):
        prompt = generator.chat_template.render(messages)
        assert prompt == hf_render(tokenizer, messages)
        assert generator.tokenizer.encode(prompt) == hf_render(tokenizer, messages, tokenize=True)
    assert generator.chat_template.stop == ()  # the model's own template: no transcript stop
    bad = [CONVERSATION[1], CONVERSATION[0]]
    with pytest.raises(jinja2.TemplateError):
        hf_render(tokenizer, bad)
    with pytest.raises(MessageError, match="refused them: the system message must come first") as caught:
        generator.chat_template.render(bad)
    assert caught.value.param == "messages"
    with pytest.raises(AigcError, match="hf-chat.onnx's chat template refused"):
        generator.chat(bad)


def test_chat_template_jinja_wins_over_tokenizer_config(tmp_path):
    (tmp_path / "chat_template.jinja").write_text("J{{ messages[0].content }}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "T", "bos_token": "<s>"}))
    assert hf_chat_template(tmp_path) == {"template": "J{{ messages[0].content }}",
                                          "special_tokens": {"bos_token": "<s>"}}
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "X"}, {"name": "default", "template": "D"}]}))
    assert hf_chat_template(tmp_path)["template"] == "D"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    assert hf_chat_template(tmp_path) is None


@pytest.mark.parametrize("messages, param, message", [
    ("hello", "messages", "expected a non-empty list of messages, got str"),
    ([], "messages", "got an empty list"),
    (None, "messages", "got nothing"),
    (["hi"], "messages[0]", "expected an object with a role and content, got str"),
    ([{"content": "hi"}], "messages[0].role", "missing"),
    ([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}], "messages[1].role",
     "expected one of system, developer, user, assistant, got 'bot'"),
    ([{"role": "user"}], "messages[0].content", "missing"),
    ([{"role": "user", "content": 5}], "messages[0].content", "expected a string or a list of text parts, got int"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages[0].content[0]",
     "only text parts"),
    ([{"role": "user", "content": "a", "audio": 1}], "messages[0].audio", "unrecognized message field"),
    ([{"role": "tool", "content": "42", "tool_call_id": "a"}], "messages[0]", "no function calling"),
    ([{"role": "user", "content": "a", "name": 3}], "messages[0].name", "expected a string"),
])
def test_bad_messages_are_refused_naming_the_field(messages, param, message):
    with pytest.raises(MessageError) as caught:
        ChatTemplate.default().render(messages)
    assert caught.value.param == param and str(caught.value).startswith(f"{param}: ") and message in str(caught.value)


def test_text_parts_join_and_bad_templates_are_named(tmp_path):
    parts = [{"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]}]
    assert ChatTemplate.default().render(parts) == "user: a b\nassistant:"
    with pytest.raises(AigcError, match=r"chat template .*bad.jinja: not a valid Jinja template \(line 2: "):
        (tmp_path / "bad.jinja").write_text("ok\n{% for m in messages %}")
        ChatTemplate.from_file(tmp_path / "bad.jinja")
    with pytest.raises(AigcError, match="missing.jinja: cannot read it"):
        ChatTemplate.from_file(tmp_path / "missing.jinja")
    with pytest.raises(AigcError, match="no 'chat_template' in this JSON file"):
        (tmp_path / "config.json").write_text("{}")
        ChatTemplate.from_file(tmp_path / "config.json")
    with pytest.raises(MessageError, match="failed on them|refused them"):  # a template that indexes past the end
        ChatTemplate("{{ messages[5].content }}").render(parts)
    sandboxed = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(MessageError, match="refused them"):
        sandboxed.render(parts)
    with pytest.raises(AigcError, match=r"stop: at most 15 stop strings with the default chat template"):
        ChatTemplate.default().with_stops(SamplingParams(stop=[str(i) for i in range(16)]))


def test_a_model_file_with_a_broken_chat_template_is_refused_naming_it(tmp_path):
    _, path = export_tiny(tmp_path, "gpt", chat_template={"template": "{% for %}", "special_tokens": {}}, name="broken")
    with pytest.raises(ModelFileError, match=r"broken.onnx's chat template: not a valid Jinja template"):
        TextGenerator.load(str(path))
    _, path = export_tiny(tmp_path, "gpt", chat_template={"template": 5}, name="garbled")
    with pytest.raises(ModelFileError, match=r"garbled.onnx: 'aigc.chat_template' metadata must be"):
        TextGenerator.load(str(path))


# Over HTTP ---------------------------------------------------------------------------

# The tiny models' templated twin carries a template of its own in its metadata.
TEMPLATED = {"template": "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}[assistant]",
             "special_tokens": {}}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-chat")
    paths = {family: export_tiny(folder, family)[1] for family in ("gpt", "lstm")}
    paths["templated"] = export_tiny(folder, "gpt", chat_template=TEMPLATED, name="templated")[1]
    return paths


@pytest.fixture(scope="module")
def served(paths):
    text = {name: Engine(TextGenerator.load(str(path))) for name, path in paths.items()}
    server = Server(text, {}, stream_interval=0.0)
    sock = bind("127.0.0.1", 0)
    runner = uvicorn_server(server)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: runner.started, "the server to start")
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    runner.should_exit = True
    thread.join(WAIT)
    sock.close()
    for engine in text.values():
        engine.close(cancel=True, timeout=WAIT)


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served + "/v1", api_key="unused", timeout=WAIT, max_retries=0)


@pytest.fixture(scope="module")
def reference(paths):
    """Generators of their own for the expected replies (the served ones belong to their engines)."""
    return {name: TextGenerator.load(str(path)) for name, path in paths.items()}


HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def add"}]
HELLO_PROMPT = "system: Be brief.\nuser: def add\nassistant:"  # the default template, written out


def expected(reference, model, prompt, **options):
    return reference[model].generate(prompt, SamplingParams(**options))[0]


def test_chat_equals_the_generator_on_the_prompt_written_out(client, reference):
    response = client.chat.completions.create(model="gpt", messages=HELLO, max_tokens=12, temperature=0.9, seed=5,
                                              extra_body={"ignore_eos": True})
    want = expected(reference, "gpt", HELLO_PROMPT, max_new_tokens=12, temperature=0.9, seed=5, ignore_eos=True,
                    stop=["\nuser:"])
    (choice,) = response.choices
    assert choice.message.content == want.text and choice.message.role == "assistant"
    assert choice.finish_reason == want.finish_reason and choice.index == 0 and choice.logprobs is None
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-") and response.model == "gpt"
    assert response.usage.prompt_tokens == len(reference["gpt"].tokenizer.encode(HELLO_PROMPT))
    assert response.usage.completion_tokens == len(want.token_ids)
    again = client.chat.completions.create(model="gpt", messages=HELLO, max_tokens=12, temperature=0.9, seed=5,
                                           extra_body={"ignore_eos": True})
    assert again.choices[0].message.content == choice.message.content
    params = SamplingParams(max_new_tokens=12, temperature=0.9, seed=5, ignore_eos=True)
    assert reference["gpt"].chat(HELLO, params).text == want.text
    assert "".join(reference["gpt"].chat_stream(HELLO, params)) == want.text


def test_a_models_own_template_is_used(client, reference):
    response = client.chat.completions.create(model="templated", messages=HELLO, max_completion_tokens=6, seed=2)
    prompt = "[system]Be brief.[user]def add[assistant]"
    assert response.usage.prompt_tokens == len(reference["templated"].tokenizer.encode(prompt))
    assert response.choices[0].message.content == expected(reference, "templated", prompt, max_new_tokens=6,
                                                           seed=2).text


def test_n_choices_take_seed_plus_index(client, reference):
    response = client.chat.completions.create(model="gpt", messages=HELLO, n=3, max_tokens=8, seed=2**64 - 2,
                                              top_p=0.9, presence_penalty=0.5, extra_body={"top_k": 40})
    assert [c.index for c in response.choices] == [0, 1, 2]
    for choice, seed in zip(response.choices, [2**64 - 2, 2**64 - 1, 0]):
        want = expected(reference, "gpt", HELLO_PROMPT, max_new_tokens=8, seed=seed, top_p=0.9, presence_penalty=0.5,
                        top_k=40, stop=["\nuser:"])
        assert choice.message.content == want.text and choice.finish_reason == want.finish_reason
    assert response.usage.prompt_tokens == len(reference["gpt"].tokenizer.encode(HELLO_PROMPT))
    assert len({c.message.content for c in response.choices}) > 1


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_streaming_with_usage(client, model):
    options = dict(model=model, messages=HELLO, max_tokens=20, seed=4, extra_body={"ignore_eos": True})
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **options))
    whole = client.chat.completions.create(**options)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    text_chunks = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in text_chunks) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in text_chunks] == [None] * (len(text_chunks) - 1) + ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stop_strings_cut_the_reply(client):
    options = dict(model="gpt", messages=HELLO, max_tokens=24, seed=11, temperature=1.5,
                   extra_body={"ignore_eos": True})
    full = client.chat.completions.create(**options).choices[0].message.content
    stop = full[8:10]
    assert len(stop) == 2
    cut = client.chat.completions.create(stop=[stop, "never there"], **options).choices[0]
    assert cut.message.content == full[:full.index(stop)] and cut.finish_reason == "stop"


def test_logprobs_in_the_chat_shape(client, reference):
    options = dict(model="gpt", messages=HELLO, max_tokens=10, seed=6, logprobs=True, top_logprobs=3,
                   extra_body={"ignore_eos": True})
    response = client.chat.completions.create(**options)
    (choice,) = response.choices
    want = expected(reference, "gpt", HELLO_PROMPT, max_new_tokens=10, seed=6, logprobs=3, ignore_eos=True,
                    stop=["\nuser:"])
    content = choice.logprobs.content
    assert [e.logprob for e in content] == pytest.approx([e.logprob for e in want.logprobs])
    assert b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace") == choice.message.content
    assert all(len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in content)
    assert all(e.top_logprobs[0].logprob >= e.top_logprobs[2].logprob for e in content)
    streamed = [entry for chunk in client.chat.completions.create(stream=True, **options)
                for c in chunk.choices if c.logprobs for entry in c.logprobs.content]
    assert [(e.token, e.logprob, e.bytes) for e in streamed] == [(e.token, e.logprob, e.bytes) for e in content]
    no_top = client.chat.completions.create(model="gpt", messages=HELLO, max_tokens=3, logprobs=True)
    assert len(no_top.choices[0].logprobs.content) == 3 and no_top.choices[0].logprobs.content[0].top_logprobs == []


def test_logit_bias_and_max_completion_tokens(client, reference):
    token = reference["gpt"].tokenizer.encode("def")[0]
    text = reference["gpt"].tokenizer.decode([token])
    response = client.chat.completions.create(model="gpt", messages=HELLO, max_completion_tokens=5,
                                              logit_bias={str(token): 100}, seed=1)
    assert response.choices[0].message.content == text * 5 and response.usage.completion_tokens == 5
    both = client.chat.completions.create(model="gpt", messages=HELLO, max_completion_tokens=4, max_tokens=4, seed=1)
    assert both.usage.completion_tokens <= 4


def test_without_max_tokens_a_reply_may_fill_the_context(client, reference):
    response = client.chat.completions.create(model="templated", messages=HELLO, seed=3,
                                              extra_body={"ignore_eos": True})
    assert response.choices[0].finish_reason == "length"
    assert response.usage.prompt_tokens + response.usage.completion_tokens == reference["templated"].context_length


def post(served, body):
    return httpx.post(served + "/v1/chat/completions", json=body, timeout=WAIT)


@pytest.mark.parametrize("body, param, words", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "function calling is not supported"),
    ({"tool_choice": "auto"}, "tool_choice", "function calling is not supported"),
    ({"functions": [{"name": "f"}]}, "functions", "function calling is not supported"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "expected one of"),
    ({"messages": {"role": "user", "content": "x"}}, "messages", "expected a non-empty list"),
    ({"messages": None}, "messages", "got nothing"),
    ({"messages": [{"role": "user", "content": "a\x00b"}]}, "messages",
     "the prompt the chat template makes from them: contains a NUL character"),
    ({"top_logprobs": 2}, "top_logprobs", "needs \"logprobs\": true"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "expected an integer in [0, 20]"),
    ({"logprobs": 2}, "logprobs", "expected true or false"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "expected an integer >= 1"),
    ({"max_completion_tokens": 4, "max_tokens": 5}, "max_completion_tokens", "give one of them"),
    ({"max_tokens": 0}, "max_tokens", "expected an integer >= 1"),
    ({"temperature": -1}, "temperature", "expected a value in"),
    ({"n": 17}, "n", "expected an integer in [1, 16]"),
    ({"prompt": "x"}, "prompt", "unrecognized request field"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only with stream=true"),
    ({"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 10}, "messages", "no room for max_tokens"),
])
def test_bad_chat_requests_get_a_400_naming_the_field(served, body, param, words):
    response = post(served, {"model": "gpt", "messages": HELLO} | body)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_openai_client_sees_the_tools_error_and_unknown_models(client):
    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(openai.BadRequestError, match="tools: function calling is not supported"):
        client.chat.completions.create(model="gpt", messages=HELLO, tools=tools)
    with pytest.raises(openai.NotFoundError, match="model 'nope'"):
        client.chat.completions.create(model="nope", messages=HELLO)


def test_a_prompt_that_fills_the_context_without_max_tokens_is_context_length_exceeded(served):
    response = post(served, {"model": "gpt", "messages": [{"role": "user", "content": "x" * 400}]})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "context_length_exceeded" and error["param"] == "messages"


# The command line ----------------------------------------------------------------------

def aigc(*args, stdin=None, check=True):
    result = subprocess.run([sys.executable, "-P", "-m", "aigc_engine.cli", *map(str, args)], input=stdin,
                            capture_output=True, text=True, timeout=300)
    assert not check or result.returncode == 0, result.stderr
    return result


def test_aigc_chat_keeps_the_history_and_replays_a_seed(paths, reference):
    result = aigc("chat", paths["gpt"], "--seed", 7, "--max-new-tokens", 6, "--temperature", 0.9, "--top-p", 1,
                  stdin="a\n\nb\n/exit\nnever sent\n")
    params = dict(max_new_tokens=6, temperature=0.9, top_p=1.0)
    first = reference["gpt"].generate("user: a\nassistant:", SamplingParams(seed=7, stop=["\nuser:"], **params))[0]
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": first.text},
                {"role": "user", "content": "b"}]
    second = reference["gpt"].chat(messages, SamplingParams(seed=8, **params)).text
    assert result.stdout == f"{first.text}\n{second}\n"
    assert result.stderr == "[seed 7]\n"


def test_aigc_chat_ends_at_eof_and_takes_a_system_message_and_a_template_file(paths, reference, tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>")
    result = aigc("chat", paths["lstm"], "--seed", 1, "--max-new-tokens", 5, "--chat-template", template,
                  "--system", "Be brief.", stdin="hello")
    want = reference["lstm"].generate("<system>Be brief.\n<user>hello\n<assistant>",
                                      SamplingParams(max_new_tokens=5, temperature=0.8, top_p=0.95, seed=1))[0]
    assert result.stdout == want.text + "\n"
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% if %}")
    result = aigc("chat", paths["gpt"], "--chat-template", bad, stdin="hi\n", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "not a valid Jinja template" in result.stderr


def test_aigc_serve_chat_template_file(paths, reference, tmp_path):
    template = tmp_path / "serve.jinja"
    template.write_text("{% for m in messages %}{{ m.role | upper }}> {{ m.content }}\n{% endfor %}BOT>")
    process = subprocess.Popen([sys.executable, "-P", "-m", "aigc_engine.cli", "serve", str(paths["gpt"]), "--port",
                                "0", "--chat-template", str(template)], stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    with ends_cleanly_on_sigint(process):
        line = process.stderr.readline()
        assert line.startswith("aigc serve: http://127.0.0.1:"), line
        client = openai.OpenAI(base_url=line.split()[2] + "/v1", api_key="unused", timeout=WAIT, max_retries=0)
        response = client.chat.completions.create(model="tiny-gpt", messages=HELLO, max_tokens=7, seed=9)
        prompt = "SYSTEM> Be brief.\nUSER> def add\nBOT>"
        assert response.usage.prompt_tokens == len(reference["gpt"].tokenizer.encode(prompt))
        assert response.choices[0].message.content == expected(reference, "gpt", prompt, max_new_tokens=7,
                                                               seed=9).text
    result = aigc("serve", paths["gpt"], "--port", 0, "--chat-template", tmp_path / "none.jinja", check=False)
    assert result.returncode == 1 and "none.jinja: cannot read it" in result.stderr
