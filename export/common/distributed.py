# What the training loops need from torch.distributed, in one place: who this rank is, the
# DistributedDataParallel wrap, this rank's rows of a global batch, averages over ranks, the
# barrier around what rank 0 alone writes, rank 0's objects for all. Without a process group (one
# process, the default) every helper is the identity: world size 1, rank 0, no wrap, all rows.
# Sharding contract: every rank computes the same global batch (B rows, a pure function of
# seed and step) and takes rows rank::size, so the ranks together see exactly the batch one
# process sees, and DDP's gradient average equals the gradient of the global batch mean.
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .batchnorm import convert_batchnorm


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that shows progress and writes checkpoints and the exported file."""
        return self.rank == 0


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World(0, 1)


def check_batch_divisible(batch_size: int, size: int) -> None:
    if batch_size % size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {size} ranks (--nproc {size}): "
                         "each rank takes an equal share of every batch")


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's rows rank::size of a global batch (B, ...) → (B / size, ...)."""
    w = world()
    return batch if w.size == 1 else batch[w.rank::w.size]


class _Method(nn.Module):
    # DDP synchronises gradients only for work done through its forward; this makes another
    # method of the model (loss_logits, loss) that forward. No parameters of its own.
    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args):
        return getattr(self.module, self.method)(*args)


def wrap(module: nn.Module, method: str = "forward"):
    """A callable running module.method whose gradients are averaged over the ranks.

    With more than one rank: BatchNorm layers normalise by the statistics of the global batch
    (convert_batchnorm) and the module is wrapped in DistributedDataParallel, which also
    broadcasts rank 0's parameters at construction. With one: the module's method itself.
    """
    if world().size == 1:
        return module if method == "forward" else getattr(module, method)
    convert_batchnorm(module)
    return DistributedDataParallel(module if method == "forward" else _Method(module, method))


def no_sync(wrapped):
    """Context in which a backward through `wrapped` leaves its gradients unsynchronised:
    for passes whose gradients for that network are thrown away (D's in the generator step)."""
    return wrapped.no_sync() if isinstance(wrapped, DistributedDataParallel) else contextlib.nullcontext()


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """{name: scalar tensor} → {name: float}, each averaged over the ranks (the global batch's mean)."""
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    if world().size > 1:
        dist.all_reduce(stacked)
        stacked /= world().size
    return dict(zip(values, stacked.tolist()))


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def periodic_checkpoint(done: int, every: int, steps: int, save) -> None:
    """After `done` steps: every `every` steps before the last, rank 0 calls save(done) while
    the others wait for it (the final checkpoint is the loop's own, after it)."""
    if done % every == 0 and done < steps:
        if world().is_main:
            save(done)
        barrier()


def broadcast_from_main(value):
    """Rank 0's `value` (any picklable object) on every rank; the others pass anything."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
