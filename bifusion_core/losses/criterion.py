"""The total training loss: the stage's weights over semantic, instance, CLIP-alignment and auxiliary terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.schema import LossConfig, LossStage
from ..data.loading.batch import Batch
from ..models.bifusion import ModelOutput
from ..models.decoder import DecoderOutput
from .box import box_loss, instance_boxes
from .clip_align import clip_alignment_sums
from .denominators import shared_counts
from .instance import instance_loss, match_costs, superpoint_targets, weighted_instance_loss
from .matching import assign
from .merge import merge_loss, query_assignment
from .no_view import no_view_sums
from .spatial import spatial_consistency_sums

INSTANCE_KEY_SPAN = 1 << 32  # instance key = window · span + scene instance id: unique across windows


def window_merge_loss(
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], num_frames: int, temperature: float, zero: torch.Tensor
) -> torch.Tensor:
    """The mean merge term over every decoder run of the batch (frames of one window pair up)."""
    if not parts:
        return zero
    total, count = window_merge_sums(parts, num_frames, temperature, zero)
    return total / count.clamp(min=1)


def window_merge_sums(
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], num_frames: int, temperature: float, zero: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed merge terms over every decoder run of the batch (frames of one window pair up) and their number."""
    if not parts:
        return zero, zero
    embed, frame, key = (torch.cat(p) for p in zip(*parts))
    keys, instance = torch.unique(key, return_inverse=True)  # the -1 key, if any, is a slot no query fills
    total, count = merge_loss(embed, frame, torch.where(key >= 0, instance, -1), num_frames, keys.numel(), temperature)
    return total, zero + count


class Criterion:
    def __init__(self, cfg: LossConfig, num_instance_classes: int, semantic_weights: torch.Tensor | None = None):
        """``semantic_weights``: per semantic class (``loss.semantic_balance``) on the model's device,
        None for plain CE."""
        self.cfg = cfg
        self.num_instance_classes = num_instance_classes
        self.semantic_weights = semantic_weights

    def matching_costs(self, decoder: DecoderOutput, gt_classes: torch.Tensor, gt_masks: torch.Tensor) -> list[torch.Tensor]:
        """The cost matrix of each supervised decoder layer (a subclass may match on other costs)."""
        return match_costs(decoder, gt_classes, gt_masks, self.cfg)

    def __call__(
        self, out: ModelOutput, batch: Batch, stage: LossStage | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the total loss and every term (unweighted, detached 0-d tensors) for logging;
        ``stage`` (the current training stage's weights) defaults to S0. Terms stay on the device:
        the trainer reads them at log time. Means over points divide by counts shared over ranks
        (``denominators``), so several ranks train like one with their whole batch."""
        cfg = self.cfg
        w = stage if stage is not None else cfg.stages[0]
        terms: dict[str, torch.Tensor] = {}
        sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # term -> (sum, count): a mean over points
        sums["semantic"] = (
            F.cross_entropy(
                out.semantic_logits.float(), batch.semantic, weight=self.semantic_weights, ignore_index=-1, reduction="sum"
            ),
            (batch.semantic >= 0).sum(),
        )
        inst: dict[str, torch.Tensor] = {}
        use_merge = cfg.merge > 0
        sp_frame = torch.zeros_like(batch.sp_batch).scatter_(0, batch.superpoints, batch.point_frame) if use_merge else None
        merge_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (embed, frame, instance key) per run
        windows = batch.window_of_sample
        targets, costs = [], []
        for b, sp in enumerate(out.sp_slices):
            sel = batch.point_batch == b
            classes, masks, ids = superpoint_targets(
                batch.instance[sel], batch.instance_class[sel], batch.superpoints[sel] - sp.start, sp.stop - sp.start
            )
            targets.append((sel, classes, masks, ids))
            costs.append(self.matching_costs(out.decoder[b], classes, masks))
        flat = assign([c for per_sample in costs for c in per_sample])  # every sample and layer: one host transfer
        for b, sp in enumerate(out.sp_slices):
            (sel, classes, masks, ids), dec = targets[b], out.decoder[b]
            matches, flat = flat[: len(costs[b])], flat[len(costs[b]) :]
            per, (rows, cols) = instance_loss(dec, classes, masks, self.num_instance_classes, cfg, matches)
            if dec.boxes is not None and cfg.box > 0:  # like merge: a term of weight 0 is not computed
                per["box"] = box_loss(dec.boxes[rows], instance_boxes(batch.points_aug[sel], batch.instance[sel])[cols])
            for k, v in per.items():
                inst[k] = inst.get(k, 0.0) + v / batch.num_samples
            if use_merge and dec.merge_embed is not None:
                query_frame, query_gt = query_assignment(dec.query_index, sp_frame[sp], masks)
                key = torch.where(query_gt >= 0, windows[b] * INSTANCE_KEY_SPAN + ids[query_gt.clamp(min=0)], -1)
                merge_parts.append((dec.merge_embed, query_frame, key))
        zero = out.f3d.new_zeros(())
        if use_merge:
            sums["merge"] = window_merge_sums(merge_parts, batch.num_frames, cfg.merge_temperature, zero)
        if out.f2d is not None and w.clip > 0:
            sums["clip_align"] = clip_alignment_sums(out.f2d, out.f3d, out.valid, cfg.temperature, cfg.clip_gradient_flow)
        if w.aux > 0 and cfg.spatial > 0:
            sums["spatial"] = spatial_consistency_sums(
                out.f3d,
                batch.points_aug,
                batch.point_batch,
                batch.superpoints,
                cfg.knn,
                cfg.spatial_anchors,
                num_samples=batch.num_samples,
            )
        if w.aux > 0 and out.valid is not None and cfg.no_view > 0:
            sums["no_view"] = no_view_sums(
                out.semantic_logits,
                batch.points_aug,
                out.valid,
                batch.point_batch,
                cfg.knn,
                cfg.pseudo_threshold,
                num_samples=batch.num_samples,
            )
        counts = shared_counts(torch.stack([count.reshape(()).to(zero.dtype) for _, count in sums.values()]))
        least = {"spatial": 1e-12}  # anchor weights are fractions; every other count is whole
        means = {name: total / count.clamp(min=least.get(name, 1.0)) for (name, (total, _)), count in zip(sums.items(), counts)}
        terms["semantic"] = means.pop("semantic")
        box = inst.pop("box", None)
        terms.update({f"instance_{k}": v for k, v in inst.items()})
        if box is not None:
            terms["box"] = inst["box"] = box
        if use_merge:
            terms["merge"] = inst["merge"] = means.pop("merge")
        terms.update(means)  # clip_align, spatial, no_view
        total = w.semantic * terms["semantic"] + w.instance * weighted_instance_loss(inst, cfg)
        if "clip_align" in terms:
            total = total + w.clip * terms["clip_align"]
        if w.aux > 0:
            aux = zero
            if "spatial" in terms:
                aux = aux + cfg.spatial * terms["spatial"]
            if "no_view" in terms:
                aux = aux + cfg.no_view * terms["no_view"]
            total = total + w.aux * aux
        logged = {k: v.detach() if torch.is_tensor(v) else total.new_tensor(float(v)) for k, v in terms.items()}
        logged["total"] = total.detach()
        return total, logged
