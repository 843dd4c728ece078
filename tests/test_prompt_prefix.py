"""A text model file's prompt prefix (config 'prompt_prefix', aigc_engine/text/generator.py):
on every backend the model reads it before each prompt — the tokens equal those of the same
model without a prefix given the prefix's ids and the prompt's, and greedy decoding picks
torch's best token after both — while the completion, its prompt and its token count show
the user's prompt only; the prefix takes its room in the context; a bad prefix is named."""

import json

import onnx
import pytest

torch = pytest.importorskip("torch")

from aigc_engine import SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.errors import ModelFileError  # noqa: E402
from onnx_models import set_config  # noqa: E402
from text_fixtures import export_tiny, torch_greedy  # noqa: E402

torch.set_num_threads(1)
CASES = [("gpt", "native"), ("gpt", "onnxruntime"), ("lstm", "native"), ("lstm", "onnxruntime")]
PREFIX = "\n"
PROMPTS = ["def", "x = 1", "class A:\n    pass"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-prefix")
    return {family: (export_tiny(folder, family, name=f"{family}-plain")[1],
                     *export_tiny(folder, family, name=f"{family}-prefixed", prompt_prefix=PREFIX))
            for family in ("gpt", "lstm")}


@pytest.mark.parametrize("family, backend", CASES)
def test_the_model_reads_the_prefix_and_the_completion_shows_the_prompt(tiny, family, backend):
    plain_path, model, prefixed_path = tiny[family]
    plain = TextGenerator.load(str(plain_path), backend=backend)
    prefixed = TextGenerator.load(str(prefixed_path), backend=backend)
    prefix_ids = prefixed.tokenizer.encode_raw(PREFIX)
    assert prefixed.prompt_prefix_ids == prefix_ids and len(prefix_ids) == 1 and plain.prompt_prefix_ids == []
    params = [SamplingParams(max_new_tokens=8, temperature=1.2, top_k=50, seed=seed, ignore_eos=True)
              for seed in range(3)]
    for prompt in PROMPTS:
        ids = prefixed.tokenizer.encode(prompt)
        got = prefixed.generate([prompt] * 3, params)
        want = plain.generate([prefix_ids + ids] * 3, params)
        for completion, reference in zip(got, want):
            assert completion.token_ids == reference.token_ids and completion.text == reference.text
            assert completion.prompt == prompt and completion.prompt_tokens == len(ids)
        greedy = prefixed.generate(prompt, SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True))[0]
        assert greedy.token_ids == torch_greedy(model, prefix_ids + ids, 5)


def test_the_prefix_takes_its_room_in_the_context(tiny):
    _, _, path = tiny["gpt"]
    generator = TextGenerator.load(str(path))
    context = generator.context_length  # 64 positions, one of them the prefix's
    assert generator.request_room == context - 1
    ids = [5] * (context - 1 - 4)
    fits = generator.generate([ids], SamplingParams(max_new_tokens=4, seed=0, ignore_eos=True))[0]
    assert fits.error is None and len(fits.token_ids) == 4
    over = generator.generate([ids + [5]], SamplingParams(max_new_tokens=4, seed=0))[0]
    assert over.finish_reason == "error"
    assert f"exceed the model's context of {context - 1} tokens (beside its 1-token prompt prefix)" in over.error
    cut = generator.generate([ids + [5, 6]], SamplingParams(max_new_tokens=4, seed=0, truncate_prompt=True))[0]
    assert cut.error is None and cut.prompt_tokens == context - 1 - 4


@pytest.mark.parametrize("prefix, message", [
    (7, "expected a string, got 7"),
    ("x = 1\n" * 40, r"\d+ tokens, expected at most 64"),
])
def test_a_bad_prefix_is_named(tiny, tmp_path, prefix, message):
    model = set_config(onnx.load(str(tiny["gpt"][0])), prompt_prefix=prefix)
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match=f"bad.onnx: config 'prompt_prefix': {message}"):
        TextGenerator.load(str(path))


def test_set_prompt_prefix_gives_an_older_file_the_prefix(tiny, tmp_path):
    import aigc_export
    from aigc_engine.artifacts.registry import resolve

    path = tmp_path / "old.onnx"
    path.write_bytes(tiny["lstm"][0].read_bytes())  # an LSTM: the parse rate wants 193 tokens of context
    provenance = aigc_export.set_prompt_prefix(path, parse_samples=2)
    config = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["aigc.config"])
    assert config["prompt_prefix"] == "\n" and provenance["quality"]["parse_samples"] == 2
    assert TextGenerator.load(str(path)).prompt_prefix_ids == TextGenerator.load(str(tiny["lstm"][2])).prompt_prefix_ids
    with pytest.raises(ValueError, match="a prompt prefix is a text model's; this is a vae"):
        aigc_export.set_prompt_prefix(resolve("digits-vae"))
