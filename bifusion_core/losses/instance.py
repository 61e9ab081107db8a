"""Instance loss on the decoder's superpoint masks, after matching queries to ground truth.

Per supervised layer: class loss over all queries (``loss.cls_loss``: focal, or cross-entropy
with a light no-object weight), BCE and Dice on the matched masks, and objectness BCE towards
each query's mask IoU with its best-overlapping instance (``loss.objectness_target: iou``).
Objectness scores a query's mask independently of its class, which ranks masks better at
inference when the class is uncertain. Taught "matched = 1, the rest 0" instead, it learns which
of several equally good copies the matching happened to pick, and ranks worse than no objectness
at all (docs/RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.schema import LossConfig
from ..models.decoder import DecoderOutput
from .classification import query_class_loss
from .matching import assign, match_cost


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).mean()


def superpoint_targets(
    instance: torch.Tensor, instance_class: torch.Tensor, sp_index: torch.Tensor, num_sp: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GT instances of one sample as soft superpoint masks (fraction of the superpoint's points),
    with their classes and instance ids (row order).

    Soft targets keep the supervision honest where a superpoint straddles two objects. One pass
    over the points (no per-instance loop), so rebuilding them every step costs little.
    """
    thing = (instance > 0).nonzero().squeeze(1)
    ids, row = torch.unique(instance[thing], return_inverse=True)
    if ids.numel() == 0:
        return instance.new_zeros(0), torch.zeros(0, num_sp, device=instance.device), ids
    sums = torch.zeros(ids.numel(), num_sp, device=instance.device)
    sums.index_put_((row, sp_index[thing]), torch.ones_like(row, dtype=sums.dtype), accumulate=True)
    counts = torch.bincount(sp_index, minlength=num_sp).clamp(min=1).float()
    first = torch.full((ids.numel(),), thing.numel(), device=instance.device).scatter_reduce(
        0, row, torch.arange(thing.numel(), device=instance.device), "amin"
    )  # each instance's first point, whose class it takes
    return instance_class[thing[first]], sums / counts, ids


def supervised_layers(out: DecoderOutput, cfg: LossConfig) -> list[int]:
    """All decoder layers with ``aux_layers``, else only the last."""
    return list(range(len(out.cls_logits))) if cfg.aux_layers else [len(out.cls_logits) - 1]


@torch.no_grad()
def mask_iou_target(mask_logits: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """(Q,) IoU of each query's binary mask with its best-overlapping instance, over superpoints
    (instances as soft masks: the share of each superpoint's points inside them)."""
    pred = (mask_logits > 0).to(gt_masks.dtype)
    if gt_masks.shape[0] == 0:
        return pred.new_zeros(pred.shape[0])
    inter = pred @ gt_masks.T
    union = pred.sum(1, keepdim=True) + gt_masks.sum(1)[None, :] - inter
    return (inter / union.clamp(min=1e-6)).amax(1)


def match_costs(out: DecoderOutput, gt_classes: torch.Tensor, gt_masks: torch.Tensor, cfg: LossConfig) -> list[torch.Tensor]:
    """The matching cost of each supervised layer: the criterion assigns a whole batch's at once."""
    weights = (cfg.match_cls, cfg.match_bce, cfg.match_dice)
    return [match_cost(out.cls_logits[i], out.mask_logits[i], gt_classes, gt_masks, weights) for i in supervised_layers(out, cfg)]


def instance_loss(
    out: DecoderOutput,
    gt_classes: torch.Tensor,
    gt_masks: torch.Tensor,
    num_classes: int,
    cfg: LossConfig,
    matches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Each term averaged over the supervised layers (all, or only the last without ``aux_layers``),
    and the final layer's matching (query rows, GT rows), which the box loss reuses. ``matches``:
    the supervised layers' assignments when the caller computed them (one transfer per batch)."""
    layers = supervised_layers(out, cfg)
    if matches is None:
        matches = assign(match_costs(out, gt_classes, gt_masks, cfg))
    terms = {"cls": 0.0, "mask_bce": 0.0, "mask_dice": 0.0, "objectness": 0.0}
    for layer, (rows, cols) in zip(layers, matches):
        cls_logits, mask_logits = out.cls_logits[layer], out.mask_logits[layer]
        target = torch.full((cls_logits.shape[0],), num_classes, dtype=torch.long, device=cls_logits.device)
        target[rows] = gt_classes[cols]
        terms["cls"] = terms["cls"] + query_class_loss(cls_logits, target, cfg)
        if cfg.objectness_target == "iou":
            quality = mask_iou_target(mask_logits, gt_masks)
        else:
            quality = torch.zeros_like(out.objectness[layer])
            quality[rows] = 1.0
        terms["objectness"] = terms["objectness"] + F.binary_cross_entropy_with_logits(out.objectness[layer], quality)
        if rows.numel():
            pred, tgt = mask_logits[rows], gt_masks[cols]
            terms["mask_bce"] = terms["mask_bce"] + F.binary_cross_entropy_with_logits(pred, tgt)
            terms["mask_dice"] = terms["mask_dice"] + dice_loss(pred, tgt)
    n = len(layers)
    return {k: (v / n if torch.is_tensor(v) else gt_masks.new_zeros(())) for k, v in terms.items()}, (rows, cols)


def weighted_instance_loss(terms: dict[str, torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    """cls·L_cls + mask·(mask_bce·BCE + mask_dice·Dice) + objectness·BCE (+ box·L_box + merge·L_merge
    when those terms are present)."""
    mask = cfg.mask_bce * terms["mask_bce"] + cfg.mask_dice * terms["mask_dice"]
    total = cfg.cls * terms["cls"] + cfg.mask * mask + cfg.objectness * terms["objectness"]
    for name in ("box", "merge"):
        if name in terms:
            total = total + getattr(cfg, name) * terms[name]
    return total
