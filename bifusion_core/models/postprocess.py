"""Decoder output → instance and semantic predictions per point (what evaluation scores)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config.schema import EvalConfig
from ..data.batch import Batch
from .bifusion import ModelOutput


@dataclass
class FramePrediction:
    key: str
    masks: np.ndarray  # (K,N) bool over the frame's points
    classes: np.ndarray  # (K,) instance class ids (train ids)
    scores: np.ndarray  # (K,)
    semantic: np.ndarray  # (N,) semantic train ids
    boxes: np.ndarray | None = None  # (K,6) world axis-aligned boxes (cx, cy, cz, sx, sy, sz)
    embeddings: np.ndarray | None = None  # (K,D) unit merge embeddings


def world_boxes(boxes: torch.Tensor, points: torch.Tensor, points_aug: torch.Tensor) -> torch.Tensor:
    """Boxes from the ``points_aug`` frame to the world, for one sample evaluated without augmentation
    (``points_aug = points − mean``, so only the centre moves)."""
    shift = (points - points_aug).mean(0)
    return torch.cat([boxes[:, :3] + shift, boxes[:, 3:]], dim=-1)


def mask_nms(masks: torch.Tensor, weights: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy NMS on superpoint masks with IoU weighted by superpoint size; returns kept rows."""
    order = scores.argsort(descending=True)
    masks_w = masks.float() * weights
    inter = masks_w @ masks.float().T
    area = masks_w.sum(-1)
    ious = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-6)
    keep: list[int] = []
    suppressed = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= ious[i] > iou
    return torch.as_tensor(keep, dtype=torch.long, device=scores.device)


@torch.no_grad()
def predict_frames(out: ModelOutput, batch: Batch, cfg: EvalConfig) -> list[FramePrediction]:
    results = []
    semantic = out.semantic_logits.argmax(-1)
    for b, sp in enumerate(out.sp_slices):
        sel = batch.point_batch == b
        sp_of_point = batch.superpoints[sel] - sp.start
        num_sp = sp.stop - sp.start
        sp_size = torch.bincount(sp_of_point, minlength=num_sp).float()
        dec = out.decoder[b]
        probs = dec.cls_logits[-1].softmax(-1)[:, :-1]
        cls_score, classes = probs.max(-1)
        mask_prob = dec.mask_logits[-1].sigmoid()
        binary = mask_prob > cfg.mask_threshold
        inside = (mask_prob * binary * sp_size).sum(-1) / (binary.float() * sp_size).sum(-1).clamp(min=1)
        scores = cls_score * inside * dec.objectness[-1].sigmoid()
        nonempty = (binary.float() * sp_size).sum(-1) > 0
        keep_mask = nonempty & (scores > cfg.score_threshold)
        idx = keep_mask.nonzero().squeeze(1)
        if idx.numel():
            kept = mask_nms(binary[idx], sp_size, scores[idx], cfg.nms_iou)[: cfg.topk]
            idx = idx[kept]
        point_masks = binary[idx][:, sp_of_point]
        results.append(
            FramePrediction(
                key=batch.keys[b],
                masks=point_masks.cpu().numpy(),
                classes=classes[idx].cpu().numpy(),
                scores=scores[idx].cpu().numpy(),
                semantic=semantic[sel].cpu().numpy(),
                boxes=None if dec.boxes is None else world_boxes(dec.boxes[idx], batch.points[sel], batch.points_aug[sel]).cpu().numpy(),
                embeddings=None if dec.merge_embed is None else dec.merge_embed[idx].cpu().numpy(),
            )
        )
    return results
