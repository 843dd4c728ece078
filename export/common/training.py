# What the training loops (images/train.py, text/train.py) share: the running average of
# the losses they show and record, and the torch thread count from AIGC_NUM_THREADS.
from __future__ import annotations

import os

import torch

EMA = 0.98  # loss averages shown and reported: about the last 50 steps


def set_threads_from_env() -> None:
    """torch.set_num_threads(AIGC_NUM_THREADS) when that is set; torch's default otherwise."""
    threads = os.environ.get("AIGC_NUM_THREADS")
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise ValueError(f"AIGC_NUM_THREADS: expected a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads))
