"""`aigc generate` end to end: the streamed text equals the Python API's, every backend,
several prompts and samples, and one-line errors for bad input."""

import json
import subprocess

import pytest

pytest.importorskip("torch")

import aigc_engine  # noqa: E402
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
    (["-p", "x", "--temperature", "-1"], "--temperature: expected a value in [0, 100]"),
    (["-p", "x", "--top-p", "0"], "--top-p: expected a value in (0, 1]"),
    (["-p", "x", "--max-new-tokens", "0"], "--max-new-tokens: expected an integer >= 1"),
    (["-p", "x " * 100], "exceed the model's context of 64 tokens"),
    (["-p", "x", "-n", "0"], "-n: expected an integer >= 1"),
    (["-p", "x", "--presence-penalty", "2.5"], "--presence-penalty: expected a value in [-2, 2]"),
    (["-p", "x", "--frequency-penalty", "-3"], "--frequency-penalty: expected a value in [-2, 2]"),
    (["-p", "x", "--logit-bias", "5=101"], "--logit-bias[5]: expected a value in [-100, 100]"),
    (["-p", "x", "--logit-bias", "5=1", "--logit-bias", "5=2"], "--logit-bias: token 5 given twice"),
    (["-p", "x", "--logprobs", "21", "--json"], "--logprobs: expected an integer in [0, 20]"),
    (["-p", "x", "--logprobs", "2"], "--logprobs: log-probabilities are printed with --json"),
])
def test_bad_input_is_one_line(tiny_gpt, args, message):
    result = aigc("generate", tiny_gpt, *args)
    assert result.returncode == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_unparseable_logit_bias_is_a_usage_error(tiny_gpt):
    result = aigc("generate", tiny_gpt, "-p", "x", "--logit-bias", "5")
    assert result.returncode == 2 and "argument --logit-bias: expected TOKEN_ID=BIAS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_too_long_prompt_names_the_flags(tiny_gpt):
    result = aigc("generate", tiny_gpt, "-p", "x " * 100, "--max-new-tokens", 4)
    assert result.returncode == 1
    assert "+ --max-new-tokens 4 exceed the model's context of 64 tokens (--truncate-prompt keeps the last 60 " \
           "prompt tokens)" in result.stderr
    assert "truncate_prompt" not in result.stderr and "max_new_tokens" not in result.stderr
    assert aigc("generate", tiny_gpt, "-p", "x " * 100, "--max-new-tokens", 4, "--truncate-prompt").returncode == 0


def test_json_gives_one_line_per_sample_with_every_sampling_flag(tiny_gpt):
    flags = ["--max-new-tokens", 6, "--temperature", 0.7, "--top-k", 30, "--top-p", 0.9, "--min-p", 0.01,
             "--repetition-penalty", 1.1, "--presence-penalty", 0.5, "--frequency-penalty", -0.5,
             "--logit-bias", "7=-100", "--logit-bias", "9=3.5", "--ignore-eos", "--stop", "zzz", "--logprobs", 2]
    result = aigc("generate", tiny_gpt, "-p", "def", "-p", "class", "-n", 2, "--seed", 11, "--json", *flags)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    generator = TextGenerator.load(str(tiny_gpt))
    jobs = [(prompt, seed) for prompt in ("def", "class") for seed in (11, 12)]
    expected = generator.generate([p for p, _ in jobs], [
        SamplingParams(max_new_tokens=6, temperature=0.7, top_k=30, top_p=0.9, min_p=0.01, repetition_penalty=1.1,
                       presence_penalty=0.5, frequency_penalty=-0.5, logit_bias={7: -100, 9: 3.5}, ignore_eos=True,
                       stop=("zzz",), logprobs=2, seed=seed) for _, seed in jobs])
    assert len(lines) == 4
    for line, (prompt, seed), completion in zip(lines, jobs, expected):
        assert line["prompt"] == prompt and line["seed"] == seed
        assert line["text"] == completion.text and line["token_ids"] == completion.token_ids
        assert line["finish_reason"] == completion.finish_reason == "length"
        assert [t["token_id"] for t in line["logprobs"]] == completion.token_ids
        assert [len(t["top"]) for t in line["logprobs"]] == [2] * 6
        assert 7 not in line["token_ids"]


def test_logit_bias_and_ignore_eos_change_the_tokens(tiny_gpt):
    def greedy(*flags):
        result = aigc("generate", tiny_gpt, "-p", "def", "--json", "--temperature", 0, "--max-new-tokens", 3, *flags)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["token_ids"]
    first = greedy()[0]
    assert greedy("--logit-bias", f"{first}=-100")[0] != first
    other = (first + 1) % 10
    assert greedy("--logit-bias", f"{other}=100") == [other] * 3


def test_no_token_healing_runs_a_trailing_space_as_it_is(tiny_gpt):
    def sample(*flags):
        result = aigc("generate", tiny_gpt, "-p", "def ", "--json", "--seed", 3, "--max-new-tokens", 4, *flags)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    generator = TextGenerator.load(str(tiny_gpt))
    for flags, healing in (((), True), (("--no-token-healing",), False)):
        line = sample(*flags)
        (expected,) = generator.generate("def ", SamplingParams(max_new_tokens=4, seed=3, temperature=0.8, top_p=0.95,
                                                                token_healing=healing))
        assert line["token_ids"] == expected.token_ids and line["prompt_tokens"] == expected.prompt_tokens
    assert sample()["prompt_tokens"] == sample("--no-token-healing")["prompt_tokens"] - 1


def test_json_reports_a_failed_sample_in_its_line(tiny_gpt):
    result = aigc("generate", tiny_gpt, "-p", "x " * 100, "-p", "def", "--json", "--max-new-tokens", 2)
    assert result.returncode == 1
    bad, good = (json.loads(line) for line in result.stdout.splitlines())
    assert bad["finish_reason"] == "error" and "--truncate-prompt" in bad["error"]
    assert good["finish_reason"] == "length" and "error" not in good
    assert "1 of 2 prompts failed" in result.stderr


def test_version():
    result = aigc("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"aigc-engine {aigc_engine.__version__}"


def test_unknown_and_non_text_models(tiny_gpt):
    result = aigc("generate", "no-such-model", "-p", "x")
    assert result.returncode == 1 and "unknown model 'no-such-model'" in result.stderr
    result = aigc("generate", "digits-gan", "-p", "x")
    assert result.returncode == 1 and "expected one of: gpt, lstm" in result.stderr


def test_a_reader_that_goes_away_stops_it_quietly(tiny_gpt):
    # `aigc generate ... | head`: the pipe's read end closes before the first token is written.
    process = subprocess.Popen(["aigc", "generate", str(tiny_gpt), "-p", "def", "-n", "4", "--max-new-tokens", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141
    assert "Broken pipe" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
