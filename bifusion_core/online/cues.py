"""A frame's post-processed instances → ``FrameInstances`` with merge embedding and world box.

With the model's merge and box heads, post-processing already gives each kept instance its
unit merge embedding and its box in the world (``FramePrediction.embeddings`` / ``.boxes``).
Without those heads (older checkpoints, or ``eval.online.cues: masks``) the embedding is the
mean fused point feature inside the mask and the box the extent of the mask's points: weaker (a
partial view gives a partial box) but it needs no training of its own.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loading.batch import Batch
from ..errors import BifusionError
from ..models.bifusion import ModelOutput
from ..models.postprocess import FramePrediction
from .merge import FrameInstances


def has_merge_heads(pred: FramePrediction) -> bool:
    return getattr(pred, "embeddings", None) is not None and getattr(pred, "boxes", None) is not None


def cue_source(pred: FramePrediction, setting: str) -> str:
    """``heads`` or ``masks`` for this prediction and setting (``auto``: heads when the model has them)."""
    if setting == "masks":
        return "masks"
    if has_merge_heads(pred):
        return "heads"
    if setting == "heads":
        raise BifusionError(
            "eval.online.cues", "the model has no merge/box heads (no merge embeddings or boxes); use 'auto' or 'masks'"
        )
    return "masks"


@torch.no_grad()
def frame_instances(out: ModelOutput, batch: Batch, pred: FramePrediction, source: str) -> FrameInstances:
    """Sample 0 of a one-frame batch."""
    dim = out.fused.shape[1]
    if source == "heads":
        embed = np.asarray(pred.embeddings, np.float32).reshape(-1, dim)  # a frame may have no instance
        boxes = np.asarray(pred.boxes, np.float32).reshape(-1, 6)
        embed = embed / np.maximum(np.linalg.norm(embed, axis=1, keepdims=True), 1e-12)
    elif len(pred.scores) == 0:
        embed, boxes = np.zeros((0, dim), np.float32), np.zeros((0, 6), np.float32)
    else:
        sel = batch.point_batch == 0
        points = batch.points[sel]
        masks = torch.as_tensor(pred.masks, device=points.device)
        embed = F.normalize(masks.float() @ out.fused[sel].float(), dim=-1).cpu().numpy()
        big = torch.finfo(points.dtype).max
        lo = torch.where(masks[..., None], points[None], torch.full_like(points[None], big)).amin(1)
        hi = torch.where(masks[..., None], points[None], torch.full_like(points[None], -big)).amax(1)
        boxes = torch.cat([(lo + hi) / 2, hi - lo], dim=1).cpu().numpy()
    return FrameInstances(
        masks=np.asarray(pred.masks, bool),
        labels=np.asarray(pred.classes, np.int64),
        scores=np.asarray(pred.scores, np.float32),
        embed=np.asarray(embed, np.float32).reshape(len(pred.scores), dim),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 6),
        class_prob=None if pred.class_prob is None else np.asarray(pred.class_prob, np.float32),
    )
