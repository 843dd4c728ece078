"""The kernels' thread pool: results do not depend on the thread count (each thread takes
chunks of the work as it comes free), and an error raised in one chunk reaches the caller
and leaves the pool usable. AIGC_NUM_THREADS is read once per process, so each count runs
in its own interpreter."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from aigc_engine import _C, ops

    rng = np.random.default_rng(0)
    outputs = []
    # Attention prefill over mixed lengths (work items: tiles x heads).
    lengths = [1, 37, 130, 64]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    q, k, v = (rng.standard_normal((cu[-1], 6, 32)).astype(np.float32) for _ in range(3))
    outputs.append(ops.attention_prefill(q, k, v, cu))
    # Projections (work items: column panels), float32 and int8.
    x = rng.standard_normal((5, 96)).astype(np.float32)
    w = rng.standard_normal((96, 300)).astype(np.float32)
    for dtype in ("float32", "int8"):
        out = np.empty((5, 300), np.float32)
        _C.Linear(w, None, dtype).forward(x, out)
        outputs.append(out)
    # A prompt's worth of int8 rows: quantised in parallel too (work items: rows).
    rows = rng.standard_normal((200, 96)).astype(np.float32)
    out = np.empty((200, 300), np.float32)
    _C.Linear(w, None, "int8").forward(rows, out)
    outputs.append(out)
    # The sampler (work items: rows), then a NaN in one row of many: a clear error, after
    # which the pool still works.
    logits = rng.standard_normal((40, 1000)).astype(np.float32)
    params = dict(seeds=np.arange(40, dtype=np.uint64), steps=0, temperature=0.8, top_k=50, top_p=0.9,
                  min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)
    outputs.append(ops.sample(logits, **params).tokens)
    logits[33, 7] = np.nan
    try:
        ops.sample(logits, **params)
        sys.exit("a NaN logit did not raise")
    except ValueError as error:
        assert "33" in str(error), error
    logits[33, 7] = 0.0
    outputs.append(ops.sample(logits, **params).tokens)
    np.savez(sys.argv[1], *outputs)
""")


def run_with_threads(threads: int, out: str) -> list[np.ndarray]:
    env = dict(os.environ, AIGC_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-P", "-c", SCRIPT, out], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with np.load(out) as saved:
        return [saved[name] for name in saved.files]


def test_results_are_identical_whatever_the_thread_count(tmp_path):
    one = run_with_threads(1, str(tmp_path / "1.npz"))
    for threads in (2, 3, 7):
        many = run_with_threads(threads, str(tmp_path / f"{threads}.npz"))
        for a, b in zip(one, many, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"AIGC_NUM_THREADS={threads}")


def test_workers_awake_scopes_nest_unwind_and_keep_results():
    """`with _C.workers_awake():` (benchmarks/linear.py times projections inside one) keeps
    the workers spinning only while open, through nesting and exceptions; it ends only on
    the thread that opened it; and a projection inside gives the same y as outside."""
    from aigc_engine import _C

    rng = np.random.default_rng(1)
    layer = _C.Linear(rng.standard_normal((64, 200)).astype(np.float32), None, "int8")
    x = rng.standard_normal((33, 64)).astype(np.float32)
    outside, inside = np.empty((33, 200), np.float32), np.empty((33, 200), np.float32)
    layer.forward(x, outside)
    assert not _C.workers_lingering()
    with _C.workers_awake():
        assert _C.workers_lingering()
        with _C.workers_awake():
            layer.forward(x, inside)
        assert _C.workers_lingering()
    assert not _C.workers_lingering()
    np.testing.assert_array_equal(inside, outside)

    with pytest.raises(KeyError), _C.workers_awake():
        raise KeyError("inside")
    assert not _C.workers_lingering()

    scope = _C.workers_awake()
    with scope, pytest.raises(RuntimeError, match="already entered"), scope:
        pass
    assert not _C.workers_lingering()

    scope.__enter__()
    errors = []

    def exit_elsewhere() -> None:
        try:
            scope.__exit__(None, None, None)
        except RuntimeError as error:
            errors.append(str(error))
    elsewhere = threading.Thread(target=exit_elsewhere)
    elsewhere.start()
    elsewhere.join()
    assert errors and "another thread" in errors[0], errors
    assert _C.workers_lingering()
    scope.__exit__(None, None, None)
    assert not _C.workers_lingering()
