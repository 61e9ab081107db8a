"""Loss denominators counted over every rank, so N ranks × batch b train like 1 rank × batch N·b.

A mean over points (labelled, seen, pseudo-labelled, anchor weights) is a sum over a count. The
ranks' gradients are averaged after the backward pass, so each rank divides its sum by the count
of all ranks over the number of ranks (the rule DETR and Mask2Former use for their number of
masks); its own count would give a rank's points more weight the fewer it has. One all-reduce of
all counts per step, on every rank whatever its data holds, so no rank can wait for a collective
another one skipped.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def shared_counts(counts: torch.Tensor) -> torch.Tensor:
    """(K,) this rank's counts → the counts of all ranks / number of ranks (themselves in one process)."""
    counts = counts.detach().float()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return counts
    counts = counts.clone()
    dist.all_reduce(counts)
    return counts / dist.get_world_size()
