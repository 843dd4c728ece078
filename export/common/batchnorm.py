# Batch normalisation over the global batch when training on several ranks: each rank holds
# rows rank::size of the batch, and BatchNorm must see all of them, or 2 ranks with B/2 rows
# would train a different model than 1 with B. torch.nn.SyncBatchNorm does this on GPUs only
# (it refuses CPU tensors), so this is the same computation over differentiable all-reduces,
# for gloo on CPU and NCCL alike: sum and count → mean, then the sum of squared deviations
# → the biased variance that normalises; running statistics get the unbiased one, as in
# F.batch_norm. The backward all-reduces the gradients of those sums, as SyncBatchNorm does.
# global_moments is that computation; global_batch_std uses it for a discriminator's minibatch
# standard deviation.
from __future__ import annotations

import torch
from torch import distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    # The sum over ranks, differentiable: the gradient of each rank's input is the sum over
    # ranks of the gradients of the output. (torch.distributed.nn.functional.all_reduce is
    # this, and deprecated.)
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return _summed(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _summed(grad)


def _summed(tensor: torch.Tensor) -> torch.Tensor:
    total = tensor.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(total)
    return total


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d whose training statistics span every rank's rows; in eval, or in one
    process, plain batch norm. Same parameters, buffers and state-dict keys."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C) or (N, C, H, W), this rank's rows
        if not (self.training and _several_ranks()):
            return super().forward(x)
        self._check_input_dim(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean, centred, squares, count = global_moments(x, [0, *range(2, x.dim())])  # mean: (1, C, 1, ...)
        var = squares / count  # biased
        y = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.flatten(), momentum)
                self.running_var.lerp_((var * count / (count - 1)).flatten(), momentum)
        return y


def _several_ranks() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def global_moments(x: torch.Tensor, dims: list[int]):
    """x's moments over `dims` and every rank's rows (in one process, its own): the mean (the
    reduced dims kept, of size 1), x − mean, the sum of squared deviations (shaped as the mean)
    and the count of elements each covers (a 0-d tensor)."""
    summed = all_reduce if _several_ranks() else (lambda t: t)
    sums = x.sum(dims, keepdim=True)
    totals = summed(torch.cat([sums.flatten(), x.new_tensor([x.numel() // sums.numel()])]))
    count = totals[-1]
    mean = totals[:-1].view(sums.shape) / count
    centred = x - mean
    return mean, centred, summed(centred.square().sum(dims, keepdim=True)), count


def global_batch_std(x: torch.Tensor) -> torch.Tensor:
    """The standard deviation over the batch of each feature of x (N, ...), averaged to one
    number (0-d): unbiased, over every rank's rows when several ranks each hold some. A feature
    equal in every row (a conv over the blank border of every digit) has variance 0, where the
    square root's gradient is infinite: hence the 1e-8 (as in StyleGAN)."""
    _, _, squares, count = global_moments(x, [0])
    return (squares / (count - 1) + 1e-8).sqrt().mean()


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace, in place, every BatchNorm1d/2d inside `module` by a GlobalBatchNorm holding the
    very same parameter and buffer tensors (optimizers built before keep working)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)
            replacement.weight, replacement.bias = child.weight, child.bias
            replacement.running_mean, replacement.running_var = child.running_mean, child.running_var
            replacement.num_batches_tracked = child.num_batches_tracked
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            convert_batchnorm(child)
    return module
