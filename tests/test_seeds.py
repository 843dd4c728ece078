"""One seed rule everywhere: seeds are integers in [0, 2**64 - 1]; fresh ones have 64
random bits; text sample i of a request uses (seed + i) mod 2**64 in `aigc generate` as in
the server."""

import subprocess
from types import SimpleNamespace

import pytest

from aigc_engine import ops
from aigc_engine.errors import AigcError

MAX_SEED = 2**64 - 1


def test_fresh_seeds_use_all_64_bits():
    seeds = [ops.fresh_seed() for _ in range(64)]
    assert all(0 <= s <= MAX_SEED for s in seeds)
    assert max(seeds) >= 2**63  # fails with probability 2**-64 for 64 random bits


def test_sample_seeds_wrap_at_2_64():
    assert [ops.sample_seed(MAX_SEED - 1, i) for i in range(3)] == [MAX_SEED - 1, MAX_SEED, 0]
    with pytest.raises(AigcError, match="seed"):
        ops.sample_seed(MAX_SEED + 1, 0)


def test_image_server_draws_64_bit_seeds():
    params = pytest.importorskip("aigc_engine.serving.params")
    generator = SimpleNamespace(image_shape=(1, 28, 28))
    seeds = [params.image_params({}, generator)[1] for _ in range(64)]
    assert max(seeds) >= 2**63  # 63-bit seeds never get there


def test_server_choices_wrap_past_the_largest_seed():
    params = pytest.importorskip("aigc_engine.serving.params")
    jobs, _ = params.completion_params({"prompt": "x", "n": 3, "seed": MAX_SEED}, 2)
    assert [(i, p.seed) for i, p in jobs] == [(0, MAX_SEED), (0, 0), (0, 1), (1, MAX_SEED), (1, 0), (1, 1)]


# `aigc generate` against the server's rule, on a tiny exported model --------------------

@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory):
    pytest.importorskip("torch")
    from text_fixtures import export_tiny

    return export_tiny(tmp_path_factory.mktemp("seeds"), "gpt")[1]


def test_cli_largest_seed_with_n_2_equals_the_server(tiny_gpt):
    from aigc_engine import TextGenerator
    from aigc_engine.serving.params import completion_params

    result = subprocess.run(["aigc", "generate", str(tiny_gpt), "-p", "def", "-n", "2", "--seed", str(MAX_SEED),
                             "--max-new-tokens", "6", "--temperature", "1", "--top-p", "1"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert f"[seed {MAX_SEED}," in result.stderr and "[seed 0," in result.stderr
    jobs, _ = completion_params({"prompt": "def", "n": 2, "seed": MAX_SEED, "max_tokens": 6}, 1)
    served = TextGenerator.load(str(tiny_gpt)).generate(["def"] * 2, [p for _, p in jobs])
    assert result.stdout == "".join(f"def{c.text}\n" for c in served)


def test_cli_fresh_seeds_exceed_56_bits(tiny_gpt, capsys):
    from aigc_engine.cli import main

    seeds = []
    for _ in range(8):  # each under 2**56 with probability 2**-8
        assert main(["generate", str(tiny_gpt), "-p", "def", "--max-new-tokens", "1"]) == 0
        line = capsys.readouterr().err
        seeds.append(int(line[line.index("[seed ") + 6:line.index("]")]))
    assert max(seeds) >= 2**56 and all(s <= MAX_SEED for s in seeds)
