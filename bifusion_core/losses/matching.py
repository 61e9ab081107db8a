"""Query ↔ ground-truth instance assignment (Hungarian, scipy's linear_sum_assignment)."""

from __future__ import annotations

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
def hungarian_match(
    cls_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_masks: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (query rows, gt rows) minimising class + BCE + Dice cost."""
    if gt_classes.numel() == 0 or cls_logits.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=cls_logits.device)
        return empty, empty
    prob = cls_logits.float().softmax(-1)[:, gt_classes]
    cost = (
        -weights[0] * prob
        + weights[1] * pairwise_bce(mask_logits.float(), gt_masks.float())
        + weights[2] * pairwise_dice(mask_logits.float(), gt_masks.float())
    )
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    device = cls_logits.device
    return torch.as_tensor(rows, device=device, dtype=torch.long), torch.as_tensor(cols, device=device, dtype=torch.long)
