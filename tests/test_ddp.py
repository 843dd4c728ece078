# Data-parallel training (torch.distributed DDP over gloo, on CPU): 2 ranks with B/2 rows each
# reach the parameters one process reaches with B (gan, dcgan, gpt, lstm; the vae, whose noise
# is drawn per rank, comes close); `aigc train --nproc 2`
# and the documented torchrun command end to end; a rank that fails ends the job with its
# error, and --resume continues from the checkpoint it left; bad --nproc is a one-line error.
# Every 2-rank run spawns 2 processes that import torch: those tests are marked `slow` (pytest
# -m "not slow" leaves them out). The file takes about 150 s of CPU time over both cores.
import json
import os
import signal
import subprocess
import sys
import sysconfig

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
import aigc_export  # noqa: E402
from aigc_export.common.distributed import world  # noqa: E402
from aigc_export.common.launch import launch  # noqa: E402

from aigc_engine import SamplingParams, TextGenerator  # noqa: E402

STDLIB = sysconfig.get_paths()["stdlib"]
TEXT_DATA = [f"{STDLIB}/json/*.py", f"{STDLIB}/textwrap.py"]
# Dropout masks are drawn per rank for its rows, so they cannot match one process's: off here.
IMAGE_RUNS = {
    "gan": {"config": {"g_hidden": [32, 64], "d_hidden": [64, 32], "latent_dim": 16, "d_dropout": 0.0}},
    "dcgan": {"config": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 16, "d_dropout": 0.0},
              "image_size": 8},
    # the shipped DCGAN's recipe: its minibatch standard deviation spans the global batch
    "dcgan-spectral": {"family": "dcgan", "image_size": 8, "config": {
        "g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 16, "d_dropout": 0.0, "d_norm": "spectral",
        "minibatch_std": True, "loss": "hinge", "adam_betas": [0.0, 0.9]}},
    "vae": {"config": {"enc_channels": [8, 16], "dec_channels": [16, 8], "latent_dim": 16}, "image_size": 8},
}
IMAGE_COMMON = {"data": "digits", "steps": 4, "batch_size": 8, "progress": False, "quality_n": 0}
TEXT_COMMON = {"data": TEXT_DATA, "steps": 5, "batch_size": 4, "seq_len": 16, "vocab_size": 300, "lr": 3e-3,
               "eval_every": 5, "final_eval_windows": 8, "progress": False}
TEXT_RUNS = {"gpt": {"config": {"n_positions": 16, "n_embd": 16, "n_layer": 1, "n_head": 2}},
             "lstm": {"config": {"n_embd": 16, "hidden_size": 24, "n_layer": 1}}}


def _image_run(name, out):
    return {"family": name, "out": str(out), **IMAGE_COMMON, **IMAGE_RUNS[name]}


def _text_run(family, out):
    return {"family": family, "out": str(out), **TEXT_COMMON, **TEXT_RUNS[family]}


def train_each(runs, batch_size):
    """Rank target: every run of `runs` ([(train function name, kwargs)]) in turn, in one process
    group; batch_size, the runs' own, is for launch to check."""
    return [getattr(aigc_export, name)(**kwargs) for name, kwargs in runs]


def train_failing(rank, step, kill=False, **kwargs):
    """Rank target: train_image_model, whose rank `rank` raises when it reaches `step`, or with
    kill=True dies there of SIGKILL, as the kernel's out-of-memory killer would do it."""
    from aigc_export.images import train as image_train

    real = image_train.batch_indices

    def batch_indices(n, batch_size, seed, at):
        if at == step and world().rank == rank:
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"rank {rank} stops at step {step}")
        return real(n, batch_size, seed, at)

    image_train.batch_indices = batch_indices
    return aigc_export.train_image_model(**kwargs)


def _assert_same_parameters(one, two):
    """The checkpoints of runs `one` and `two` hold the same tensors within float tolerance,
    except the biases of layers followed by BatchNorm and that BN's running mean: BN subtracts
    those biases out, so their gradient is 0 in exact arithmetic and Adam turns the rounding
    noise left in it into steps of up to about ±lr. What they feed is compared whole instead:
    the generated images (test_two_ranks_train_the_gan_one_process_trains)."""
    first, second = (aigc_export.load_checkpoint(run["checkpoint"]) for run in (one, two))
    assert first["step"] == second["step"] and first.keys() == second.keys()
    loose = _absorbed_by_batchnorm(aigc_export.build_model(first["family"], first["config"]))
    for name, tensor in first["model"].items():
        if name in loose:
            atol, rtol = 2 * first["step"] * first["lr"], 0.0
        else:
            atol, rtol = 1e-5, 1e-4
        torch.testing.assert_close(second["model"][name], tensor, rtol=rtol, atol=atol, msg=name)


def _absorbed_by_batchnorm(model):
    names, previous = set(), None
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) and previous is not None:
            names |= {f"{previous}.bias", f"{name}.running_mean"}
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            previous = name
    return names


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """(one process, two ranks) summaries by family, each family's two runs alike but for the
    number of ranks; the 2-rank runs of all families share one launch."""
    tmp = tmp_path_factory.mktemp("parity")
    torch.set_num_threads(1)
    runs = {family: ("train_image_model", _image_run) for family in IMAGE_RUNS}
    runs.update({family: ("train_text_model", _text_run) for family in TEXT_RUNS})
    one = {family: getattr(aigc_export, name)(**run(family, tmp / f"one-{family}.onnx"))
           for family, (name, run) in runs.items()}
    two = launch(2, train_each, runs=[(name, run(family, tmp / f"two-{family}.onnx"))
                                      for family, (name, run) in runs.items()], batch_size=8)
    return one, dict(zip(runs, two))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gan", "dcgan", "dcgan-spectral"])
def test_two_ranks_train_the_gan_one_process_trains(parity_runs, family):
    one, two = (runs[family] for runs in parity_runs)
    assert two["steps"] == one["steps"] == 4 and two["resumed_from"] is None
    _assert_same_parameters(one, two)
    for name, value in one["final_losses"].items():  # the ranks' losses averaged: the global batch's
        assert two["final_losses"][name] == pytest.approx(value, abs=1e-3)
    z = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    images_one = ort.InferenceSession(one["out"], providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    images_two = ort.InferenceSession(two["out"], providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    np.testing.assert_allclose(images_two, images_one, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_two_ranks_train_the_language_model_one_process_trains(parity_runs, family):
    one, two = (runs[family] for runs in parity_runs)
    _assert_same_parameters(one, two)  # no BatchNorm here: every tensor at the tight tolerance
    assert two["final_loss"] == pytest.approx(one["final_loss"], abs=1e-4)
    assert two["quality"]["heldout_loss"] == pytest.approx(one["quality"]["heldout_loss"], abs=1e-3)


@pytest.mark.slow
def test_two_ranks_train_the_vae(parity_runs):
    # Its sampling noise is drawn per rank for its rows, unlike one process's: close, not equal.
    one, two = (runs["vae"] for runs in parity_runs)
    assert two["steps"] == 4 and two["final_losses"].keys() == {"recon", "kl"}
    for name, value in one["final_losses"].items():
        assert two["final_losses"][name] == pytest.approx(value, rel=0.1)
    z = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    # The encoder ships in the same graph: its input wants a feed too (an empty batch).
    feeds = {"z": z, "input_images": np.zeros((0, 1, 8, 8), np.float32)}
    (images,) = ort.InferenceSession(two["out"], providers=["CPUExecutionProvider"]).run(["images"], feeds)
    assert images.shape == (6, 1, 8, 8) and np.isfinite(images).all()


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_and_resume_continues(tmp_path):
    run = {**_image_run("gan", tmp_path / "gan.onnx"), "steps": 8, "checkpoint_every": 2}
    # the error of the rank that failed, not rank 0's echo of it (its collective lost a peer)
    with pytest.raises(RuntimeError, match="^rank 1 of 2 failed with RuntimeError: rank 1 stops at step 5$"):
        launch(2, train_failing, rank=1, step=5, **run)
    assert not (tmp_path / "gan.onnx").exists()
    assert aigc_export.load_checkpoint(tmp_path / "gan.ckpt")["step"] == 4

    resumed = launch(2, aigc_export.train_image_model, **run, resume=True)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 8
    straight = aigc_export.train_image_model(**{**run, "out": str(tmp_path / "straight.onnx")})
    _assert_same_parameters(straight, resumed)


@pytest.mark.slow
def test_a_killed_rank_ends_the_job(tmp_path):
    with pytest.raises(RuntimeError, match="^rank 0 of 2 was killed by signal 9$"):
        launch(2, train_failing, rank=0, step=1, kill=True, **_image_run("gan", tmp_path / "gan.onnx"))
    assert not (tmp_path / "gan.onnx").exists()


def aigc(*args, cwd=None):
    return subprocess.run(["aigc", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


TINY_GPT_FLAGS = ["--data", *TEXT_DATA, "--steps", 4, "--vocab-size", 300, "--seq-len", 16, "--batch-size", 4,
                  "--n-layer", 1, "--n-embd", 16, "--n-head", 2, "--context", 16]


def _check_written(out, summary):
    assert summary["out"] == str(out) and summary["steps"] == 4
    assert sorted(p.name for p in out.parent.iterdir()) == [out.with_suffix(".ckpt").name, out.name]
    assert aigc_export.load_checkpoint(out.with_suffix(".ckpt"))["step"] == 4
    generator = TextGenerator.load(str(out))
    (completion,) = generator.generate("import", SamplingParams(max_new_tokens=6, temperature=0.0, ignore_eos=True))
    assert completion.finish_reason == "length" and len(completion.token_ids) == 6


@pytest.mark.slow
def test_cli_nproc_2_end_to_end(tmp_path):
    out = tmp_path / "run" / "gpt.onnx"
    out.parent.mkdir()
    result = aigc("train", "gpt", *TINY_GPT_FLAGS, "--nproc", 2, "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("| 0/4 [") == 1 and "| 4/4 [" in result.stderr  # rank 0's progress bar alone
    _check_written(out, json.loads(result.stdout))


@pytest.mark.slow
def test_torchrun_command_of_the_readme(tmp_path):
    out = tmp_path / "run" / "gpt.onnx"
    out.parent.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "aigc_engine.cli", "train", "gpt", *map(str, TINY_GPT_FLAGS), "--quiet", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    _check_written(out, json.loads(result.stdout))  # one summary: rank 0's


@pytest.mark.parametrize("args, message", [
    (["gan", "--nproc", "0"], "--nproc: expected an integer >= 1, got 0"),
    (["gan", "--nproc", "-2"], "--nproc: expected an integer >= 1, got -2"),
    (["gan", "--nproc", "2", "--batch-size", "7"], "batch_size 7 is not divisible by the 2 ranks (--nproc 2)"),
    (["gpt", "--nproc", "3"], "batch_size 16 is not divisible by the 3 ranks (--nproc 3)"),
    (["classifier", "--nproc", "2"], "--nproc: the classifier trains in one process"),
])
def test_cli_bad_nproc_is_one_line(tmp_path, args, message):
    out = tmp_path / "m.onnx"
    result = aigc("train", *args, "--steps", 2, "--out", out)
    assert result.returncode == 1
    assert result.stderr.startswith(f"aigc: error: {message}") and result.stderr.count("\n") == 1
    assert not out.exists()


def test_launch_checks_before_spawning(monkeypatch):
    with pytest.raises(ValueError, match="nproc must be a positive integer, got 0"):
        launch(0, aigc_export.train_image_model, family="gan")
    with pytest.raises(ValueError, match="batch_size 64 is not divisible by the 3 ranks"):
        launch(3, aigc_export.train_image_model, family="gan")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="--nproc 4, but torchrun started 2 ranks"):
        launch(4, aigc_export.train_image_model, family="gan")
