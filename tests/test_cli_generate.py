"""`aigc generate` end to end: the streamed text equals the Python API's, every backend,
several prompts and samples, and one-line errors for bad input."""

import subprocess

import pytest

pytest.importorskip("torch")

from aigc_engine import SamplingParams, TextGenerator  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("cli-text"), "gpt")[1]


def aigc(*args, stdin=None):
    return subprocess.run(["aigc", *map(str, args)], capture_output=True, text=True, timeout=300, input=stdin)


@pytest.mark.parametrize("backend", ["native", "onnxruntime"])
def test_generate_streams_the_same_text_as_the_api(tiny_gpt, backend):
    result = aigc("generate", tiny_gpt, "-p", "def add", "--seed", 7, "--max-new-tokens", 12, "--temperature", 0.9,
                  "--top-k", 40, "--backend", backend)
    assert result.returncode == 0, result.stderr
    params = SamplingParams(max_new_tokens=12, temperature=0.9, top_k=40, top_p=0.95, seed=7)
    expected = TextGenerator.load(str(tiny_gpt), backend=backend).generate("def add", params)[0]
    assert result.stdout == "def add" + expected.text + "\n"
    assert "[seed 7]" in result.stderr


def test_generate_several_prompts_and_samples(tiny_gpt):
    result = aigc("generate", tiny_gpt, "-p", "def", "-p", "class", "-n", 2, "--seed", 1, "--max-new-tokens", 5)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("-----") == 4
    assert "[seed 1," in result.stderr and "[seed 2," in result.stderr


def test_prompt_from_stdin(tiny_gpt):
    result = aigc("generate", tiny_gpt, "-p", "-", "--seed", 0, "--max-new-tokens", 3, stdin="class Point")
    assert result.returncode == 0 and result.stdout.startswith("class Point")


@pytest.mark.parametrize("args, message", [
    (["-p", ""], "prompt: empty"),
    (["-p", "x", "--temperature", "-1"], "temperature: expected a value in [0, 100]"),
    (["-p", "x", "--top-p", "0"], "top_p: expected a value in (0, 1]"),
    (["-p", "x", "--max-new-tokens", "0"], "max_new_tokens: expected an integer >= 1"),
    (["-p", "x " * 100], "exceed the model's context of 64 tokens"),
    (["-p", "x", "-n", "0"], "-n: expected an integer >= 1"),
])
def test_bad_input_is_one_line(tiny_gpt, args, message):
    result = aigc("generate", tiny_gpt, *args)
    assert result.returncode == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_unknown_and_non_text_models(tiny_gpt):
    result = aigc("generate", "no-such-model", "-p", "x")
    assert result.returncode == 1 and "unknown model 'no-such-model'" in result.stderr
    result = aigc("generate", "digits-gan", "-p", "x")
    assert result.returncode == 1 and "expected one of: gpt, lstm" in result.stderr
