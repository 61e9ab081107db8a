"""The total training loss: weighted semantic, instance and CLIP-alignment terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.schema import LossConfig
from ..data.batch import Batch
from ..models.bifusion import ModelOutput
from .clip_align import clip_alignment_loss
from .instance import instance_loss, superpoint_targets


class Criterion:
    def __init__(self, cfg: LossConfig, num_instance_classes: int):
        self.cfg = cfg
        self.num_instance_classes = num_instance_classes

    def __call__(self, out: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Returns the total loss and every term (unweighted) for logging."""
        cfg = self.cfg
        terms: dict[str, torch.Tensor] = {}
        terms["semantic"] = F.cross_entropy(out.semantic_logits, batch.semantic, ignore_index=-1) \
            if bool((batch.semantic >= 0).any()) else out.semantic_logits.sum() * 0.0
        inst = {"cls": 0.0, "mask_bce": 0.0, "mask_dice": 0.0}
        for b, sp in enumerate(out.sp_slices):
            sel = batch.point_batch == b
            num_sp = sp.stop - sp.start
            classes, masks = superpoint_targets(
                batch.instance[sel], batch.instance_class[sel], batch.superpoints[sel] - sp.start, num_sp
            )
            dec = out.decoder[b]
            per = instance_loss(dec, classes, masks, self.num_instance_classes, cfg)
            for k, v in per.items():
                inst[k] = inst[k] + v / batch.num_samples
        terms.update({f"instance_{k}": v for k, v in inst.items()})
        instance_total = cfg.cls * inst["cls"] + cfg.mask_bce * inst["mask_bce"] + cfg.mask_dice * inst["mask_dice"]
        total = cfg.semantic * terms["semantic"] + cfg.instance * instance_total
        if out.f2d is not None and cfg.clip > 0:
            terms["clip_align"] = clip_alignment_loss(out.f2d, out.f3d, out.valid, cfg.temperature)
            total = total + cfg.clip * terms["clip_align"]
        logged = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
        logged["total"] = float(total.detach())
        return total, logged
