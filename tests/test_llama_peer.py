"""benchmarks/llama_cpp_peer.py without llama.cpp: its parser on output captured from the real
llama-batched-bench, the command it builds, a stand-in binary that prints that output, and the
line it gives instead of rows when the build is absent."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import common  # noqa: E402
import llama_cpp_peer as peer  # noqa: E402

sys.path[:] = [entry for entry in sys.path if entry != str(BENCHMARKS)]  # see test_benchmark_reports.py

# llama-batched-bench (llama-cpp-python 0.3.36's llama.cpp) on the f32 GGUF of the random
# GPT-2-small, run by peer.command(..., threads=2, 32, 128, (1, 8, 32)) on a 2-core EPYC:
# its whole stdout, then its whole stderr
SAMPLE = """\
{"n_kv_max": 8192, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": 0, "n_threads": 2, "n_threads_batch": 2, "pp": 32, "tg": 128, "pl": 1, "n_kv": 160, "t_pp": 0.089855, "speed_pp": 356.129303, "t_tg": 3.758579, "speed_tg": 34.055424, "t": 3.848434, "speed": 41.575352}
{"n_kv_max": 8192, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": 0, "n_threads": 2, "n_threads_batch": 2, "pp": 32, "tg": 128, "pl": 8, "n_kv": 1280, "t_pp": 0.613412, "speed_pp": 417.337769, "t_tg": 8.007606, "speed_tg": 127.878426, "t": 8.621017, "speed": 148.474350}
{"n_kv_max": 8192, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": 0, "n_threads": 2, "n_threads_batch": 2, "pp": 32, "tg": 128, "pl": 32, "n_kv": 5120, "t_pp": 2.415536, "speed_pp": 423.922485, "t_tg": 25.011360, "speed_tg": 163.765579, "t": 27.426895, "speed": 186.678070}
warning: no usable GPU found, --gpu-layers option will be ignored
warning: one possible reason is that llama.cpp was compiled without GPU support
warning: consult docs/build.md for compilation instructions
0.00.234.717 W llama_context: n_ctx is not divisible by n_seq_max - rounding down to 8192
"""
# new tokens pl·128 over t_pp + t_tg of each row above (its "speed" adds the pl·32 prompt tokens)
EXPECTED = {1: 128 / (0.089855 + 3.758579), 8: 8 * 128 / (0.613412 + 8.007606),
            32: 32 * 128 / (2.415536 + 25.011360)}


def test_parse_counts_new_tokens_over_prompt_plus_generation():
    rates = peer.parse_jsonl(SAMPLE)
    assert sorted(rates) == [1, 8, 32]
    assert rates == pytest.approx(EXPECTED, rel=1e-6)


def test_command_has_the_benchmark_shape():
    cmd = peer.command(Path("/l"), "q8_0", 3, 32, 128, (1, 8, 32))
    flags = dict(zip(cmd[1::2], cmd[2::2]))
    assert cmd[0] == "/l/build/bin/llama-batched-bench"
    assert flags["-m"] == "/l/gguf/gpt2-small-random-q8_0.gguf"
    assert (flags["-npp"], flags["-ntg"], flags["-npl"]) == ("32", "128", "1,8,32")
    assert (flags["-t"], flags["-tb"], flags["-ngl"]) == ("3", "3", "0")
    assert int(flags["-c"]) >= 32 * (32 + 128)
    assert flags["--output-format"] == "jsonl" and "--no-repack" not in cmd
    assert peer.command(Path("/l"), "q8_0", 3, 32, 128, (1, 8, 32), repack=False)[-1] == "--no-repack"


def fake_build(root: Path, output: str) -> Path:
    """A folder shaped like build_llama.sh's whose llama-batched-bench prints `output`."""
    binary = root / peer.BENCH_BINARY
    binary.parent.mkdir(parents=True)
    (root / "sample.txt").write_text(output)
    binary.write_text(f"#!/bin/sh\ncat '{root / 'sample.txt'}'\n")
    binary.chmod(0o755)
    (root / "gguf").mkdir()
    for t in peer.GGUF_TYPES:
        peer.gguf_path(root, t).write_bytes(b"GGUF")
    return root


def test_measure_runs_every_type_and_takes_the_median(tmp_path):
    results, note = peer.measure(fake_build(tmp_path, SAMPLE), 2, 32, 128, (1, 8, 32), repeats=3)
    assert set(results) == {"f32", "bf16", "q8_0"}
    assert results["bf16"] == pytest.approx(EXPECTED, rel=1e-6)
    assert "median of 3" in note


def test_a_run_that_crashes_with_repacked_weights_runs_again_without(tmp_path):
    root = fake_build(tmp_path, SAMPLE)
    binary = root / peer.BENCH_BINARY  # q8_0 dies of SIGSEGV unless --no-repack, as on an AMX Xeon
    binary.write_text("#!/bin/sh\n"
                      "case \"$*\" in *q8_0*) case \"$*\" in *--no-repack*) ;; *) kill -SEGV $$;; esac;; esac\n"
                      f"cat '{root / 'sample.txt'}'\n")
    results, note = peer.measure(root, 2, 32, 128, (1, 8, 32), repeats=2)
    assert results["q8_0"] == pytest.approx(EXPECTED, rel=1e-6)
    assert note.endswith("; q8_0 with --no-repack (repacked: signal 11)")


def test_a_failed_run_is_a_skip_line(tmp_path):
    results, note = peer.measure(fake_build(tmp_path, "error: unable to load model\n"), 2, 32, 128, (1,), 1)
    assert results is None and note.startswith("llama.cpp: skipped (f32: ")


@pytest.mark.parametrize("setup", ["unset", "empty folder", "no gguf"])
def test_absent_build_is_skipped_with_one_line(tmp_path, monkeypatch, capsys, setup):
    monkeypatch.delenv(peer.ENV_VAR, raising=False)
    root = None if setup == "unset" else tmp_path
    if setup == "no gguf":
        fake_build(tmp_path, SAMPLE)
        peer.gguf_path(tmp_path, "bf16").unlink()
    assert peer.llama_dir(None) is None
    results, note = peer.measure(root, 2, 32, 128, (1, 8, 32), 1)
    assert results is None
    assert note.startswith("llama.cpp: skipped (") and note.endswith("see README 'llama.cpp as a peer')")
    assert "\n" not in note
    records = common.Records({})
    peer.add_rows(records, "gpt2-small", root, 2, 32, 128, (1, 8, 32), 1)
    assert records.records == [] and capsys.readouterr().out.strip() == note


def test_rows_are_recorded_like_text_py(tmp_path, capsys):
    records = common.Records({})
    records.add("text", "hf-generate", {"model": "gpt2-small", "batch": 8}, 100.0, "tokens/s")
    peer.add_rows(records, "gpt2-small", fake_build(tmp_path, SAMPLE), 2, 32, 128, (1, 8, 32), 1)
    mine = [r for r in records.records if r["system"].startswith("llama.cpp-")]
    assert len(mine) == 9
    row = next(r for r in mine if r["system"] == "llama.cpp-q8_0" and r["params"]["batch"] == 8)
    assert row["params"] == {"model": "gpt2-small", "batch": 8, "prompt": 32, "new_tokens": 128, "threads": 2}
    assert row["value"] == pytest.approx(EXPECTED[8]) and row["unit"] == "tokens/s"
    assert f"{EXPECTED[8] / 100:.2f}x" in capsys.readouterr().out
