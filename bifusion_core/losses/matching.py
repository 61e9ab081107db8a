"""Query ↔ ground-truth instance assignment (Hungarian, scipy's linear_sum_assignment)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of every prediction row (Q,S) against every target row (G,S) → (Q,G)."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def match_cost(
    cls_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_masks: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """(Q,G) class + BCE + Dice cost of every query against every GT instance, on the device."""
    if gt_classes.numel() == 0 or cls_logits.shape[0] == 0:
        return cls_logits.new_zeros(cls_logits.shape[0], gt_classes.numel(), dtype=torch.float32)
    prob = cls_logits.float().softmax(-1)[:, gt_classes]
    return (
        -weights[0] * prob
        + weights[1] * pairwise_bce(mask_logits.float(), gt_masks.float())
        + weights[2] * pairwise_dice(mask_logits.float(), gt_masks.float())
    )


# what a non-finite cost is solved as: the solver refuses NaN and ±inf ("invalid numeric entries")
NON_FINITE_COST = 1e30


@torch.no_grad()
def assign(costs: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Hungarian assignment (query rows, gt rows) of every cost matrix: all of them cross to the
    host in one transfer and their indices come back in one, whatever the batch size and layers.

    A non-finite cost (from a non-finite output: the trainer skips such a step) is solved as a
    large finite one, so a diverging run reaches the trainer's skip-and-count path instead of
    stopping here with a traceback."""
    if not costs:
        return []
    device = costs[0].device
    flat = torch.cat([c.reshape(-1) for c in costs]).numpy(force=True)  # the one device → host read
    flat = np.nan_to_num(flat, nan=NON_FINITE_COST, posinf=NON_FINITE_COST, neginf=-NON_FINITE_COST)
    indices, offset = [], 0
    for c in costs:
        q, g = c.shape
        rows, cols = linear_sum_assignment(flat[offset : offset + q * g].reshape(q, g))
        offset += q * g
        indices += [rows, cols]
    lengths = [len(i) for i in indices]
    back = torch.as_tensor(np.concatenate(indices).astype(np.int64), device=device).split(lengths)
    return [(back[2 * i], back[2 * i + 1]) for i in range(len(costs))]
