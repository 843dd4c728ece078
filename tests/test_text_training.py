# Training the text models with aigc_export: corpora from files, folders and globs, the
# content-hash held-out split, a few steps of each family that lower the loss and export
# a working file with its quality stamped in, exact resume after an interruption, clear
# errors for bad input, and `aigc train gpt` end to end. Tiny sizes: plumbing, not quality.
import json
import math
import subprocess
import sysconfig

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")
import aigc_export  # noqa: E402
from aigc_export.text import data as text_data, train as text_train  # noqa: E402

torch.set_num_threads(1)
TINY = {"gpt": {"n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 2},
        "lstm": {"n_embd": 32, "hidden_size": 48, "n_layer": 1}}
STDLIB = sysconfig.get_paths()["stdlib"]
DATA = [f"{STDLIB}/json/*.py", f"{STDLIB}/textwrap.py"]  # 6 files, ~60 kB


def _train(family, out, **kwargs):
    options = {"data": DATA, "steps": 40, "batch_size": 8, "seq_len": 24, "vocab_size": 400, "lr": 3e-3,
               "config": TINY[family], "eval_every": 20, "progress": False, **kwargs}
    return aigc_export.train_text_model(family, out=out, **options)


def _weights(path):
    """The parameters by torch name (the exporter's own constants are numbered per process)."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer
            if not t.name.startswith("val_")}


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_few_steps_lower_the_loss_and_export(family, tmp_path):
    summary = _train(family, tmp_path / f"{family}.onnx")
    history = summary["heldout_history"]
    assert [s for s, _ in history] == [20, 40]
    first_batch = math.log(400)  # an untrained model is near uniform over the vocabulary
    assert history[-1][1] < history[0][1] < first_batch
    quality = summary["quality"]
    assert quality["perplexity"] == pytest.approx(math.exp(quality["heldout_loss"]), rel=1e-3)
    corpus = summary["corpus"]
    bpb = quality["heldout_loss"] * corpus["heldout_tokens"] / (corpus["heldout_bytes"] * math.log(2))
    assert quality["bits_per_byte"] == pytest.approx(bpb, rel=1e-3) and 0 < bpb < 8
    assert corpus["files"] == [5, 1] and corpus["heldout_bytes"] > 0

    meta = {p.key: p.value for p in onnx.load(summary["out"]).metadata_props}
    assert meta["aigc.family"] == family
    config = json.loads(meta["aigc.config"])
    assert config["vocab_size"] == 400 and config["eos_token_id"] == 0
    assert config["prompt_prefix"] == "\n"  # a prompt starts a line (aigc_export.text.export.DEFAULT_PROMPT_PREFIX)
    provenance = json.loads(meta["aigc.provenance"])
    assert provenance["quality"] == quality and provenance["steps"] == 40
    tokenizer = aigc_export.tokenizer_from_json(meta["aigc.tokenizer"])
    assert tokenizer.decode(tokenizer.encode("import json\n").ids) == "import json\n"


def test_the_parse_rate_is_stamped_as_the_runtime_measures_it(tmp_path):
    from aigc_engine import TextGenerator
    from aigc_engine.text.quality import parse_rate

    config = {**TINY["gpt"], "n_positions": 256}  # the parse rate's samples are 192 tokens long
    summary = _train("gpt", tmp_path / "gpt.onnx", steps=4, parse_samples=6, config=config)
    quality = summary["quality"]
    assert quality["parse_samples"] == 6 and "bits_per_byte" in quality  # added to the held-out figures
    complete, parsing = parse_rate(TextGenerator.load(summary["out"]), 6)
    assert (quality["parse_complete"], quality["parse_rate"]) == (complete, parsing / 6)
    meta = {p.key: p.value for p in onnx.load(summary["out"]).metadata_props}
    assert json.loads(meta["aigc.provenance"])["quality"] == quality
    # Trained on other text than the default corpus (these globs), the default is no parse rate
    assert "parse_rate" not in _train("gpt", tmp_path / "plain.onnx", steps=2)["quality"]


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    straight = _train("gpt", tmp_path / "straight" / "m.onnx", steps=12, eval_every=4)
    real_windows = text_data.random_windows

    def interrupted(tokens, batch, length, seed, step):
        if step == 9:
            raise KeyboardInterrupt
        return real_windows(tokens, batch, length, seed, step)

    monkeypatch.setattr(text_train, "random_windows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train("gpt", tmp_path / "resumed" / "m.onnx", steps=12, eval_every=4, checkpoint_every=4)
    assert not (tmp_path / "resumed" / "m.onnx").exists()
    monkeypatch.setattr(text_train, "random_windows", real_windows)
    resumed = _train("gpt", tmp_path / "resumed" / "m.onnx", steps=12, eval_every=4, resume=True)
    assert resumed["resumed_from"] == 8
    assert resumed["heldout_history"] == straight["heldout_history"]
    assert resumed["quality"] == straight["quality"] and resumed["final_loss"] == straight["final_loss"]
    a, b = _weights(straight["out"]), _weights(resumed["out"])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="cannot resume.*seed"):
        _train("gpt", tmp_path / "resumed" / "m.onnx", steps=12, eval_every=4, resume=True, seed=1)


def test_same_seed_same_weights_other_seed_other(tmp_path):
    a = _weights(_train("lstm", tmp_path / "a.onnx", steps=5)["out"])
    b = _weights(_train("lstm", tmp_path / "b.onnx", steps=5)["out"])
    c = _weights(_train("lstm", tmp_path / "c.onnx", steps=5, seed=1)["out"])
    assert sorted(a) == ["embedding.weight", "head.bias", "head.weight", "lstm.bias_hh_l0", "lstm.bias_ih_l0",
                         "lstm.weight_hh_l0", "lstm.weight_ih_l0"]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_corpus_split_is_by_content_and_stable(tmp_path):
    name, files = aigc_export.corpus_files(None)
    assert name == "python-stdlib" and len(files) > 100
    assert not any({"test", "site-packages", "encodings"} & set(f.parts) for f in files)
    texts = text_data.read_documents(files)
    train, heldout = text_data.split_documents(texts)
    assert 0.005 < len(heldout) / len(texts) < 0.05  # ~2%
    train2, heldout2 = text_data.split_documents(list(reversed(texts)))
    assert sorted(heldout2) == sorted(heldout)  # by content, not position
    one = text_data.split_documents(["a\n" * 50])
    assert one == (["a\n" * 45], ["a\n" * 5])


def test_windows_are_seeded_and_in_range():
    tokens = np.arange(100, dtype=np.int32)
    w = text_data.random_windows(tokens, 4, 10, seed=3, step=7)
    assert w.shape == (4, 11) and w.dtype == torch.int64
    assert torch.equal(w, text_data.random_windows(tokens, 4, 10, seed=3, step=7))
    assert torch.all(w[:, 1:] - w[:, :-1] == 1)
    assert not torch.equal(w, text_data.random_windows(tokens, 4, 10, seed=3, step=8))
    held = text_data.heldout_windows(tokens, 30, 100)
    assert held.shape == (3, 31) and held[1, 0] == 30
    spread = text_data.heldout_windows(np.arange(1001, dtype=np.int32), 10, 3)
    assert spread[:, 0].tolist() == [0, 500, 990]  # first, middle and last of 100 windows


def test_learning_rate_schedule():
    rates = [text_train.lr_at(s, 1.0, 10, 110) for s in range(110)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and rates[60] == pytest.approx(0.55)
    assert all(x >= y for x, y in zip(rates[10:], rates[11:])) and rates[-1] > 0.1


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere/.*no files match"):
        _train("gpt", tmp_path / "m.onnx", data=[str(tmp_path / "nowhere/*.txt")])
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="corpus is empty"):
        _train("gpt", tmp_path / "m.onnx", data=[str(tmp_path / "empty.txt")])
    (tmp_path / "short.txt").write_text("a few words\nand more\n")
    with pytest.raises(ValueError, match="too short for windows"):
        _train("lstm", tmp_path / "m.onnx", data=[str(tmp_path / "short.txt")])
    with pytest.raises(ValueError, match="vocab_size 50 is too small"):
        _train("gpt", tmp_path / "m.onnx", vocab_size=50)
    with pytest.raises(ValueError, match="seq_len 64 is longer than .* n_positions 32"):
        _train("gpt", tmp_path / "m.onnx", seq_len=64)
    with pytest.raises(ValueError, match="n_embd 30 is not divisible by n_head 4"):
        _train("gpt", tmp_path / "m.onnx", config={"n_embd": 30, "n_head": 4})
    with pytest.raises(ValueError, match="unknown text family 'gan'"):
        aigc_export.train_text_model("gan")
    assert not (tmp_path / "m.onnx").exists()


def aigc(*args):
    return subprocess.run(["aigc", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_train_gpt_end_to_end(tmp_path):
    out = tmp_path / "tiny.onnx"
    result = aigc("train", "gpt", "--data", *DATA, "--steps", 6, "--out", out, "--vocab-size", 300,
                  "--seq-len", 16, "--batch-size", 4, "--n-layer", 1, "--n-embd", 16, "--n-head", 2, "--context", 32,
                  "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 6 and summary["out"] == str(out)
    config = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["aigc.config"])
    assert (config["n_layer"], config["n_embd"], config["n_positions"], config["vocab_size"]) == (1, 16, 32, 300)


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/*.py"], "no such file, and no files match it"),
    (["--n-embd", "30", "--n-head", "4"], "n_embd 30 is not divisible by n_head 4"),
    (["--vocab-size", "10"], "vocab_size 10 is too small"),
    (["--config", "[1"], "--config: not valid JSON"),
])
def test_cli_train_bad_input_is_one_line(tmp_path, args, message):
    out = tmp_path / "m.onnx"
    base = ["--data", *DATA] if "--data" not in args else []
    result = aigc("train", "lstm" if "--n-head" not in args else "gpt", *base, *args, "--steps", 2, "--out", out)
    assert result.returncode == 1
    assert result.stderr.startswith("aigc: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and not out.exists()
