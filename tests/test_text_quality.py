# Text quality: the parse rate's "first definition complete and parses" on hand-written
# samples whose answer is known; held-out bits per byte against a direct numpy computation
# from the torch model's logits, on every backend; the held-out windows' layout.
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aigc_engine import TextGenerator  # noqa: E402
from aigc_engine.text import quality  # noqa: E402
from aigc_engine.text.sampling import Completion  # noqa: E402
from text_fixtures import export_tiny  # noqa: E402

BODY = "def f(x):\n    return x\n"


@pytest.mark.parametrize("text, ended, definition, parses", [
    (BODY + "\ndef g():\n    pass\n", False, BODY + "\n", True),      # the next definition closes it
    (BODY + "print(f(1))", False, BODY, True),                          # so does any statement at column 0
    (BODY, True, BODY, True),                                           # <|endoftext|>: the file ended there
    (BODY, False, None, False),                                         # cut off: might have gone on
    ("def f(x):\n    y = (1,\n2)\n    # c\n# at column 0\n    return y\nx = 1", False,
     "def f(x):\n    y = (1,\n2)\n    # c\n# at column 0\n    return y\n", True),  # brackets and comments stay in
    ("def f(x):\n    if x:\n        return 1\n    return 2\nf(1)", False,
     "def f(x):\n    if x:\n        return 1\n    return 2\n", True),  # nested blocks
    ("def f(): return 1\nx = 2", False, "def f(): return 1\n", True),  # one line
    ("def f(): return 1\n", False, None, False),
    ("def f():\nx = 1\n", False, "def f():\n", False),                 # complete, no body: does not parse
    ("def f(x):\n    return x +\nprint(1)", False, "def f(x):\n    return x +\n", False),
    ("def  This This returns", True, "def  This This returns", False),
    ('def f(x):\n    s = """abc\n', False, None, False),               # cut inside a string
    ('def f(x):\n    s = """abc\n', True, 'def f(x):\n    s = """abc\n', False),
    ("def f(x):\n    if x:\n        return 1\n  print(2)", False, None, False),  # impossible dedent
])
def test_first_definition_complete_and_parsing(text, ended, definition, parses):
    assert quality.first_definition(text, ended) == definition
    assert (definition is not None and quality.parses_as_function(definition)) == parses


def test_parses_as_function_wants_exactly_one_function():
    assert quality.parses_as_function("async def f():\n    await g()\n")
    assert not quality.parses_as_function("def f():\n    pass\nx = 1\n")
    assert not quality.parses_as_function("class A:\n    pass\n")
    assert not quality.parses_as_function("def f():\n    return '\x00'\x00\n")


class _Scripted:
    """A generator whose samples are given: what parse_rate counts is then known."""

    def __init__(self, texts):
        self.texts = texts
        self.prompts, self.params = None, None

    def generate(self, prompts, params):
        self.prompts, self.params = prompts, params
        return [Completion(prompt=p, text=t, finish_reason=reason) for p, (t, reason) in zip(prompts, self.texts)]


def test_parse_rate_counts_complete_and_parsing_samples():
    scripted = _Scripted([(" f(x):\n    return x\n\nx = 1", "length"), (" f(x) return x\n    pass\ny = 2", "length"),
                          (" f(x):\n    return x\n", "length"), (" g():\n    pass\n", "stop")])
    assert quality.parse_rate(scripted, n=4, seed=10) == (3, 2)
    assert scripted.prompts == ["def"] * 4
    assert [p.seed for p in scripted.params] == [10, 11, 12, 13]
    first = scripted.params[0]
    assert (first.temperature, first.top_k, first.max_new_tokens) == (0.8, 40, 192)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    return {family: export_tiny(folder, family) for family in ("gpt", "lstm")}


def _numpy_bits_per_byte(model, tokenizer, window):
    with torch.no_grad():
        logits = model.loss_logits(torch.tensor([window[:-1]]))[0].double().numpy()
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nats = -log_probs[np.arange(len(window) - 1), window[1:]].sum()
    return nats / (len(tokenizer.decode(window[1:]).encode()) * math.log(2))


@pytest.mark.parametrize("family, backend", [("gpt", "native"), ("gpt", "onnxruntime"), ("lstm", "onnxruntime")])
def test_bits_per_byte_equals_numpy_on_the_models_logits(tiny, family, backend):
    model, path = tiny[family]
    generator = TextGenerator.load(str(path), backend=backend)
    text = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n"
    window = generator.tokenizer.encode(text)
    assert len(window) > 10
    bits, tokens, size = quality.bits_per_byte(generator, [window, window[5:]])
    expected_nats = sum(_numpy_bits_per_byte(model, generator.tokenizer, w) * math.log(2)
                        * len(generator.tokenizer.decode(w[1:]).encode()) for w in (window, window[5:]))
    assert tokens == 2 * len(window) - 7
    assert size == len(text[len(generator.tokenizer.decode(window[:1])):].encode()) + len(
        generator.tokenizer.decode(window[6:]).encode())
    assert bits == pytest.approx(expected_nats / (size * math.log(2)), rel=1e-5)
    assert quality.bits_per_byte(generator, [window])[0] == pytest.approx(
        _numpy_bits_per_byte(model, generator.tokenizer, window), rel=1e-5)


def test_heldout_windows_cut_the_encoded_texts_without_overlap(tiny):
    generator = TextGenerator.load(str(tiny["gpt"][1]))
    texts = ["def add(a, b):\n    return a + b\n" * 6, "x = 1\n" * 20]
    tokens = [t for text in texts for t in generator.tokenizer.encode(text) + [generator.eos_token_id]]
    length = generator.context_length - 1  # no seq_len in this file's provenance: 256, capped by the context
    windows = quality.heldout_windows(generator, texts)
    assert len(windows) == (len(tokens) - 1) // length >= 2
    assert windows == [tokens[i * length:i * length + length + 1] for i in range(len(windows))]
    assert quality.heldout_windows(generator, texts, max_windows=1) == [windows[0]]


def test_evaluate_text_model_reports_every_figure(tiny):
    generator = TextGenerator.load(str(tiny["lstm"][1]))
    report = quality.evaluate_text_model(generator, n=3, seed=0, max_windows=2)
    assert report["heldout_windows"] == 2 and report["parse_samples"] == 3
    assert 0 <= report["parse_ok"] <= report["parse_complete"] <= 3
    assert report["parse_rate"] == report["parse_ok"] / 3
    assert 0 < report["heldout_bits_per_byte"] < 20 and report["heldout_tokens"] > 0 and report["heldout_bytes"] > 0
