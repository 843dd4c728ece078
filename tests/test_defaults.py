"""One set of defaults: `aigc generate`'s flags and the HTTP completions' fields default to
SamplingParams' values, except the knobs of the README's "Seeds and defaults" table, whose
values must be the code's and whose CLI flags say why in their --help."""

import dataclasses
import re
from pathlib import Path

import pytest

from aigc_engine.cli import build_parser
from aigc_engine.text.sampling import SamplingParams

README = Path(__file__).resolve().parent.parent / "README.md"
PYTHON = {f.name: f.default for f in dataclasses.fields(SamplingParams) if f.default is not dataclasses.MISSING}


def documented_exceptions() -> dict[str, dict[str, float]]:
    """knob → {"Python": value, "CLI": value, "HTTP": value}, from the README's table."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Seeds and defaults"):]
    lines = [line for line in section.split("\n## ")[0].splitlines() if line.startswith("| `")]
    assert lines, "the README's defaults table is missing"
    table = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        knob = re.match(r"`(\w+)`", cells[0]).group(1)
        table[knob] = {"Python": float(cells[1]), "CLI": float(cells[2]), "HTTP": float(cells[3])}
        assert cells[4], f"{knob}: the table gives no reason"
    return table


def cli_generate():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    generate = subparsers.choices["generate"]
    args = generate.parse_args(["model", "-p", "x"])
    helps = {a.dest: a.help or "" for a in generate._actions}
    return {k: v for k, v in vars(args).items() if k in PYTHON}, helps


def http_defaults() -> dict:
    params = pytest.importorskip("aigc_engine.serving.params")
    (_, sampling), = params.completion_params({"prompt": "x"}, 1)[0]
    return {name: getattr(sampling, name) for name in PYTHON}


def normalised(value):
    return tuple(value) if isinstance(value, list) else value


def test_the_cli_defaults_are_sampling_params_or_documented():
    table = documented_exceptions()
    defaults, helps = cli_generate()
    assert {"max_new_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed"} <= set(defaults)
    for knob, value in defaults.items():
        if knob in table:
            assert value == table[knob]["CLI"], f"--{knob}: default {value}, the README says {table[knob]['CLI']}"
        else:
            assert normalised(value) == PYTHON[knob], f"--{knob}: default {value!r}, SamplingParams' {PYTHON[knob]!r}"
        if value != PYTHON[knob] and normalised(value) != PYTHON[knob]:
            assert "Python API" in helps[knob], f"--{knob}: --help does not say why its default differs"


def test_the_http_defaults_are_sampling_params_or_documented():
    table = documented_exceptions()
    for knob, value in http_defaults().items():
        expected = table[knob]["HTTP"] if knob in table else PYTHON[knob]
        assert value == expected, f"{knob}: HTTP default {value!r}, expected {expected!r}"


def test_the_table_names_real_knobs_with_their_python_defaults_and_real_differences():
    defaults, _ = cli_generate()
    http = http_defaults()
    for knob, values in documented_exceptions().items():
        assert values["Python"] == PYTHON[knob], f"{knob}: SamplingParams says {PYTHON[knob]}"
        assert defaults[knob] != PYTHON[knob] or http[knob] != PYTHON[knob], f"{knob}: no exception to document"
