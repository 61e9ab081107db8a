"""A frame's post-processed instances → ``FrameInstances`` with merge embedding and world box.

With the model's merge and box heads (``DecoderOutput.merge_embed`` / ``.boxes``) the cues are the
kept queries' rows; the boxes live in the frame of ``points_aug`` (the frame's centred points at
evaluation), so the frame's mean point is added back. Without those heads (older checkpoints,
or ``eval.online.cues: masks``) the embedding is the mean fused point feature inside the mask and
the box the extent of the mask's points: weaker (a partial view gives a partial box) but needs no
training of its own.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batch import Batch
from ..errors import BifusionError
from ..models.bifusion import ModelOutput
from ..models.postprocess import FramePrediction
from .merge import FrameInstances


def has_merge_heads(out: ModelOutput) -> bool:
    dec = out.decoder[0]
    return getattr(dec, "merge_embed", None) is not None and getattr(dec, "boxes", None) is not None


def cue_source(out: ModelOutput, setting: str) -> str:
    """``heads`` or ``masks`` for this model and setting (``auto``: heads when the model has them)."""
    if setting == "masks":
        return "masks"
    if has_merge_heads(out):
        return "heads"
    if setting == "heads":
        raise BifusionError("eval.online.cues", "the model has no merge/box heads (DecoderOutput.merge_embed/boxes); use 'auto' or 'masks'")
    return "masks"


@torch.no_grad()
def frame_instances(out: ModelOutput, batch: Batch, pred: FramePrediction, source: str) -> FrameInstances:
    """Sample 0 of a one-frame batch."""
    sel = batch.point_batch == 0
    points = batch.points[sel]
    masks = torch.as_tensor(pred.masks, device=points.device)
    if len(pred.scores) == 0:
        dim = out.fused.shape[1]
        embed, boxes = np.zeros((0, dim), np.float32), np.zeros((0, 6), np.float32)
    elif source == "heads":
        dec = out.decoder[0]
        q = torch.as_tensor(pred.queries, device=points.device, dtype=torch.long)
        embed = F.normalize(dec.merge_embed[q].float(), dim=-1).cpu().numpy()
        boxes = dec.boxes[q].float().clone()
        boxes[:, :3] += points.mean(0)
        boxes = boxes.cpu().numpy()
    else:
        m = masks.float()
        feats = out.fused[sel].float()
        embed = F.normalize(m @ feats, dim=-1).cpu().numpy()
        big = torch.finfo(points.dtype).max
        lo = torch.where(masks[..., None], points[None], torch.full_like(points[None], big)).amin(1)
        hi = torch.where(masks[..., None], points[None], torch.full_like(points[None], -big)).amax(1)
        boxes = torch.cat([(lo + hi) / 2, hi - lo], dim=1).cpu().numpy()
    return FrameInstances(
        masks=np.asarray(pred.masks, bool), labels=np.asarray(pred.classes, np.int64), scores=np.asarray(pred.scores, np.float32),
        embed=np.asarray(embed, np.float32), boxes=np.asarray(boxes, np.float32),
    )
