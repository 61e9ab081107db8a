"""Box loss for the decoder's box head: L1 on (centre, size) plus 1 − 3D IoU, on matched queries.

Ground truth is the axis-aligned box of the matched instance's points in the sample (all T
frames of a multi-view window), in the ``points_aug`` frame the predictions live in. L1 alone
weighs a 5 cm error alike on a cup and a sofa; the IoU term makes it relative to the object.
"""

from __future__ import annotations

import torch

from ..ops import scatter_min_max


def instance_boxes(points: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
    """(G,6) centre + size of each instance id > 0, in ``torch.unique`` order (as ``superpoint_targets``)."""
    ids, inverse = torch.unique(instance, return_inverse=True)
    lo, hi = scatter_min_max(points, inverse, ids.numel())
    boxes = torch.cat([(lo + hi) / 2, hi - lo], dim=-1)
    return boxes[ids > 0]


def box_corners(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = boxes[..., 3:] / 2
    return boxes[..., :3] - half, boxes[..., :3] + half


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3D IoU of axis-aligned boxes, row by row: a, b (K,6) → (K,)."""
    a_lo, a_hi = box_corners(a)
    b_lo, b_hi = box_corners(b)
    inter = (torch.minimum(a_hi, b_hi) - torch.maximum(a_lo, b_lo)).clamp(min=0).prod(-1)
    union = a[:, 3:].prod(-1) + b[:, 3:].prod(-1) - inter
    return inter / union.clamp(min=1e-9)


def pairwise_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3D IoU of every box in a (K,6) with every box in b (L,6) → (K,L) (what an online merge compares)."""
    return box_iou(
        a[:, None].expand(-1, b.shape[0], -1).reshape(-1, 6), b[None].expand(a.shape[0], -1, -1).reshape(-1, 6)
    ).reshape(a.shape[0], b.shape[0])


def box_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean L1 over the 6 numbers + mean (1 − IoU); 0 for no matched query."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return (pred - target).abs().mean() + (1 - box_iou(pred, target)).mean()
