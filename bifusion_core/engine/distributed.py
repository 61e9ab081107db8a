"""Several processes (``torchrun``) training one model: ranks, gradient averaging, synchronised BN.

Gradients are averaged with one flattened all-reduce per optimizer step rather than through
DistributedDataParallel: staged unfreezing changes which parameters train mid-run, and DDP fixes
that set when it wraps the model. Gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def launched_world() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun prepared (environment variables); a no-op for one process."""
    world = launched_world()
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local_rank)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(model: nn.Module) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Mean of every trainable parameter's gradient over the ranks (absent gradients count as 0)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = (
            flat[offset : offset + n].view_as(p).clone() if p.grad is None else p.grad.copy_(flat[offset : offset + n].view_as(p))
        )
        offset += n


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj) -> list:
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _sum_over_ranks(values: torch.Tensor) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)


class _SyncNormalise(torch.autograd.Function):
    """(x − mean) / sqrt(var + eps) with mean and variance over the rows of every rank.

    Forward: the statistics from per-rank sums in float64, all-reduced. Backward: the centred form,
    dx = (g − mean(g) − x̂·mean(g·x̂)) / σ, both means from float64 sums over every rank (one
    all-reduce). The centred form stays accurate on a channel whose mean is far larger than its
    spread, where differentiating var = E[x²] − E[x]² through the all-reduce, or torch's float32
    BatchNorm, loses digits (and 1 rank × batch 2 would no longer match 2 ranks × batch 1).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float):
        x64 = x.double()
        local = torch.cat([x64.sum(0), (x64 * x64).sum(0), x64.new_tensor([x.shape[0]])])
        _sum_over_ranks(local)
        c = x.shape[1]
        count = local[2 * c]
        mean = local[:c] / count
        var = (local[c : 2 * c] / count - mean * mean).clamp(min=0)
        invstd = (var + eps).rsqrt().to(x.dtype)
        normalised = (x - mean.to(x.dtype)) * invstd
        ctx.save_for_backward(normalised, invstd)
        ctx.count = count
        statistics = mean.to(x.dtype), var.to(x.dtype), count.to(x.dtype)  # for the running averages only
        ctx.mark_non_differentiable(*statistics)
        return (normalised, *statistics)

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *unused):
        normalised, invstd = ctx.saved_tensors
        local = torch.cat([grad.sum(0, dtype=torch.float64), (grad * normalised).sum(0, dtype=torch.float64)])
        _sum_over_ranks(local)
        c = grad.shape[1]
        mean_grad, mean_grad_x = (local[:c] / ctx.count).to(grad.dtype), (local[c:] / ctx.count).to(grad.dtype)
        return (grad - mean_grad - normalised * mean_grad_x) * invstd, None


class SyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the voxels of all ranks; gradients flow back through the statistics.

    torch's SyncBatchNorm (which MinkowskiEngine's MinkowskiSyncBatchNorm wraps) refuses CPU
    tensors, so this one all-reduces itself and runs under gloo and NCCL alike: the same
    statistics and gradients as one process holding every rank's batch. In one process it is
    the same computation without the all-reduce (``train.sync_bn`` converts there too), so 1
    and N ranks agree (``_SyncNormalise`` has the measurements).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        out, mean, var, count = _SyncNormalise.apply(x.to(torch.promote_types(x.dtype, torch.float32)), self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * count / (count - 1).clamp(min=1))
                self.num_batches_tracked += 1
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module) -> int:
    """Swap the BatchNorm inside every MinkowskiBatchNorm for ``SyncBatchNorm1d``; returns how many."""
    import MinkowskiEngine as ME

    converted = 0
    for module in model.modules():
        if isinstance(module, ME.MinkowskiBatchNorm) and not isinstance(module.bn, SyncBatchNorm1d):
            old = module.bn
            new = SyncBatchNorm1d(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats)
            new.load_state_dict(old.state_dict())
            new.to(old.weight.device if old.affine else old.running_mean.device)
            module.bn = new
            converted += 1
    return converted
