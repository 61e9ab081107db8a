"""Supervision for points no view sees, from their confident seen neighbours.

Points that fail the projection or depth test get (almost) no 2D feature, so the fused
feature and the semantic prediction there rest on the 3D branch alone. Where seen points
nearby are confidently classified (max probability > threshold), their vote is a good
pseudo-label for the unseen point; where they are not, the unseen point is left alone rather
than taught noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import knn, sample_ids


@torch.no_grad()
def pseudo_labels(
    probs: torch.Tensor,
    xyz: torch.Tensor,
    valid: torch.Tensor,
    point_batch: torch.Tensor,
    k: int,
    threshold: float,
    num_samples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(unseen point rows, their pseudo-label): the class with the largest summed probability among
    confident seen kNN; unseen points without a confident seen neighbour get none."""
    rows, labels = [], []
    confident = valid & (probs.max(dim=-1).values > threshold)
    for b in sample_ids(point_batch, num_samples):
        in_b = point_batch == b
        unseen = (in_b & ~valid).nonzero().squeeze(1)
        donors = (in_b & confident).nonzero().squeeze(1)
        if unseen.numel() == 0 or donors.numel() == 0:
            continue
        kk = min(k, donors.numel())
        _, nn_idx = knn(xyz[unseen], xyz[donors], kk)
        vote = probs[donors[nn_idx]].sum(dim=1)  # (U, C)
        rows.append(unseen)
        labels.append(vote.argmax(dim=-1))
    if not rows:
        empty = torch.zeros(0, dtype=torch.long, device=probs.device)
        return empty, empty
    return torch.cat(rows), torch.cat(labels)


def no_view_loss(*args, **kwargs) -> torch.Tensor:
    """Mean cross-entropy over the pseudo-labelled unseen points (see ``no_view_sums``); 0 when none."""
    total, count = no_view_sums(*args, **kwargs)
    return total / count.clamp(min=1)


def no_view_sums(
    logits: torch.Tensor,
    xyz: torch.Tensor,
    valid: torch.Tensor,
    point_batch: torch.Tensor,
    k: int = 8,
    threshold: float = 0.8,
    num_samples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of unseen points' semantic logits against their neighbours' pseudo-labels,
    and how many points have one (the mean's denominator)."""
    rows, target = pseudo_labels(logits.detach().softmax(-1), xyz, valid, point_batch, k, threshold, num_samples)
    count = logits.new_tensor(float(rows.numel()))  # a host-side length, no device read
    if rows.numel() == 0:
        return logits.new_zeros(()), count
    return F.cross_entropy(logits[rows], target, reduction="sum"), count
