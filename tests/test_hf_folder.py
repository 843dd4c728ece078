"""A Hugging Face GPT-2 folder used as a model, converted without torch: greedy tokens on both
backends and the cached file's logits equal transformers' GPT2LMHeadModel (float32 and bf16
safetensors); the second load reuses the cached file, a changed folder is converted again;
folders that are not GPT-2 checkpoints get errors saying what a folder holds; and with
torch made unimportable, TextGenerator.load, `aigc import-hf`, `aigc generate` and
`aigc serve` all take the folder."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import onnxruntime as ort  # noqa: E402

from aigc_engine import ModelFileError, SamplingParams, TextGenerator, UnknownModelError  # noqa: E402
from aigc_engine.artifacts import hf_import  # noqa: E402
from aigc_engine.artifacts.schema import GPT_INPUTS, gpt_past_names  # noqa: E402
from hf_fixtures import save_gpt2  # noqa: E402
from serve_fixtures import ends_cleanly_on_sigint  # noqa: E402

torch.set_num_threads(1)
NEW = 24
GREEDY = SamplingParams(max_new_tokens=NEW, temperature=0.0, ignore_eos=True)
WAIT = 60
# Run in a subprocess: every later `import torch` (or transformers) raises ImportError.
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def converted(cache) -> list:
    return sorted((cache / "hf").glob("*.onnx"))


def hf_greedy(model, prompt: list[int], n: int = NEW) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                             pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return out[0, len(prompt):].tolist()


def ort_logits(path, n_layer: int, n_head: int, head_dim: int, tokens: list[int]) -> np.ndarray:
    """The file's logits for every position of `tokens`, in one prefill on onnxruntime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.array([tokens])
    feeds = dict(zip(GPT_INPUTS, (ids, np.arange(len(tokens))[None], np.ones_like(ids))))
    feeds.update((name, np.zeros((1, n_head, 0, head_dim), np.float32)) for name in gpt_past_names(n_layer))
    return session.run(["logits"], feeds)[0][0]


def no_torch(code: str, cache, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, AIGC_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-P", "-c", NO_TORCH + code], capture_output=True, text=True,
                          timeout=300, env=env, **kwargs)


@pytest.mark.parametrize("backend, dtype", [("native", torch.float32), ("onnxruntime", torch.float32),
                                            ("native", torch.bfloat16)])
def test_a_folder_loads_directly_and_matches_transformers(tmp_path, cache, backend, dtype):
    folder = tmp_path / "gpt2-tiny"
    model, _ = save_gpt2(folder, 2, 4, 32, 96, seed=3, dtype=dtype)
    gen = TextGenerator.load(str(folder), backend=backend)
    assert converted(cache) == [gen.artifact.path]
    prompt = gen.tokenizer.encode("for i in")
    tokens = gen.generate([prompt], GREEDY)[0].token_ids
    assert tokens == hf_greedy(model, prompt) and len(set(tokens)) > 3
    with torch.no_grad():
        want = model(torch.tensor([prompt + tokens])).logits[0].numpy()
    np.testing.assert_allclose(ort_logits(gen.artifact.path, 2, 4, 8, prompt + tokens), want, rtol=0, atol=1e-4)
    provenance = gen.artifact.provenance
    assert provenance["imported_from"] == str(folder.resolve()) and "torch_version" not in provenance


def test_the_second_load_reuses_the_cached_file(tmp_path, cache, monkeypatch):
    folder = tmp_path / "gpt2-tiny"
    save_gpt2(folder, 1, 2, 32, 64)
    path = TextGenerator.load(str(folder)).artifact.path
    written = path.stat().st_mtime_ns

    def convert(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(hf_import, "import_hf", convert)
    assert TextGenerator.load(str(folder), backend="onnxruntime").artifact.path == path
    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "gpt2-tiny")  # same bytes, same times: same key
    assert TextGenerator.load(str(copy)).artifact.path == path
    assert path.stat().st_mtime_ns == written and converted(cache) == [path]


def test_a_changed_folder_is_converted_again(tmp_path, cache):
    folder = tmp_path / "gpt2-tiny"
    save_gpt2(folder, 1, 2, 32, 64, seed=0)
    first = TextGenerator.load(str(folder))
    model, _ = save_gpt2(folder, 1, 2, 32, 64, seed=1)  # new weights, same names and sizes
    second = TextGenerator.load(str(folder))
    assert second.artifact.path != first.artifact.path
    prompt = second.tokenizer.encode("for i in")
    assert second.generate([prompt], GREEDY)[0].token_ids == hf_greedy(model, prompt)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "eos_token_id": 5}))
    third = TextGenerator.load(str(folder))
    assert third.artifact.config["eos_token_id"] == 5
    assert converted(cache) == sorted(g.artifact.path for g in (first, second, third))


def test_folders_that_are_not_gpt2_checkpoints_say_what_a_folder_holds(tmp_path, cache):
    source = tmp_path / "gpt2-tiny"
    save_gpt2(source, 1, 2, 32, 64)
    holds = "a model folder holds a Hugging Face GPT-2 checkpoint: config.json \\(model_type gpt2\\)"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    with pytest.raises(ModelFileError, match=f"{folder}: no config.json; {holds}"):
        TextGenerator.load(str(folder))
    shutil.copy(source / "config.json", folder)
    with pytest.raises(ModelFileError, match=f"no weights \\(model.safetensors or pytorch_model.bin\\); {holds}"):
        TextGenerator.load(str(folder))
    weights = (source / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[:8 + int.from_bytes(weights[:8], "little") + 100])
    with pytest.raises(ModelFileError, match=f"no tokenizer \\(tokenizer.json, or vocab.json and merges.txt\\); "
                                             f"{holds}"):
        TextGenerator.load(str(folder))
    shutil.copy(source / "tokenizer.json", folder)
    with pytest.raises(ModelFileError, match="model.safetensors: tensor .* needs .* bytes, but its data_offsets"):
        TextGenerator.load(str(folder))
    (folder / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(ModelFileError, match="model.safetensors: not a safetensors file"):
        TextGenerator.load(str(folder))
    shutil.copy(source / "model.safetensors", folder)
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ModelFileError, match="model_type is 'llama'; only 'gpt2' checkpoints can be imported"):
        TextGenerator.load(str(folder))
    with pytest.raises(UnknownModelError, match="nor an existing file or folder"):
        TextGenerator.load(str(tmp_path / "absent"))
    assert converted(cache) == []


def test_the_runtime_converts_and_runs_a_folder_without_torch(tmp_path, cache):
    folder = tmp_path / "gpt2-tiny"
    model, _ = save_gpt2(folder, 2, 2, 32, 64, seed=2)
    code = (f"from aigc_engine import SamplingParams, TextGenerator\n"
            f"gen = TextGenerator.load({str(folder)!r})\n"
            f"prompt = gen.tokenizer.encode('def main():')\n"
            f"tokens = gen.generate([prompt], SamplingParams(max_new_tokens={NEW}, temperature=0.0, "
            f"ignore_eos=True))[0].token_ids\n"
            "assert sys.modules['torch'] is None\n"
            "print(prompt, tokens, sep='\\n')\n")
    result = no_torch(code, cache, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    prompt, tokens = (json.loads(line) for line in result.stdout.splitlines())
    assert tokens == hf_greedy(model, prompt)

    out = tmp_path / "gpt2.onnx"
    cli = f"from aigc_engine.cli import main\nsys.exit(main(['import-hf', {str(folder)!r}, '--out', {str(out)!r}]))"
    result = no_torch(cli, cache, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == f"wrote {out}\n", result.stderr
    assert TextGenerator.load(str(out)).generate([prompt], GREEDY)[0].token_ids == tokens

    legacy = tmp_path / "legacy"
    save_gpt2(legacy, 1, 2, 32, 64, safetensors=False)
    result = no_torch(f"from aigc_engine import TextGenerator\nTextGenerator.load({str(legacy)!r})", cache,
                      cwd=tmp_path)
    assert result.returncode == 1
    assert "pytorch_model.bin needs torch, which is not installed; save the checkpoint as model.safetensors" \
        in result.stderr.splitlines()[-1]


def test_aigc_generate_takes_a_folder(tmp_path, cache):
    folder = tmp_path / "gpt2-tiny"
    save_gpt2(folder, 1, 2, 32, 64, seed=4)
    args = ["generate", str(folder), "-p", "def main():", "--max-new-tokens", "12", "--temperature", "0",
            "--seed", "0"]
    result = no_torch(f"from aigc_engine.cli import main\nsys.exit(main({args!r}))", cache, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = TextGenerator.load(str(folder)).generate(["def main():"], SamplingParams(max_new_tokens=12,
                                                                                         temperature=0.0))[0]
    assert result.stdout == "def main():" + expected.text + "\n" and expected.text
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = no_torch(f"from aigc_engine.cli import main\nsys.exit(main(['generate', {str(empty)!r}, '-p', 'x']))",
                   cache, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("aigc: error: ") and bad.stderr.count("\n") == 1
    assert "no config.json; a model folder holds a Hugging Face GPT-2 checkpoint" in bad.stderr


def test_aigc_serve_takes_a_folder(tmp_path, cache):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    folder = tmp_path / "gpt2-tiny"
    model, tokenizer = save_gpt2(folder, 1, 2, 32, 64, seed=5)
    code = "from aigc_engine.cli import main\nsys.exit(main(['serve', '.', '--port', '0']))"  # id: the folder's name
    process = subprocess.Popen([sys.executable, "-P", "-c", NO_TORCH + code], stderr=subprocess.PIPE, text=True,
                               cwd=folder, env=dict(os.environ, AIGC_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1"))
    with ends_cleanly_on_sigint(process):
        line = process.stderr.readline()
        assert line.startswith("aigc serve: http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[2]
        assert [m["id"] for m in httpx.get(url + "/v1/models", timeout=WAIT).json()["data"]] == ["gpt2-tiny"]
        response = httpx.post(url + "/v1/completions", timeout=WAIT, json={
            "model": "gpt2-tiny", "prompt": "for i in", "max_tokens": 10, "temperature": 0, "ignore_eos": True})
        assert response.status_code == 200, response.text
        prompt = tokenizer.encode("for i in").ids
        assert response.json()["choices"][0]["text"] == tokenizer.decode(hf_greedy(model, prompt, 10))
