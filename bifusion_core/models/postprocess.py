"""Decoder output → instance and semantic predictions per point (what evaluation scores).

Instances are proposed as (query, class) pairs, the way Mask3D and OneFormer3D rank them: every
pair gets ``score = p(class | query)^e · mask quality · objectness^v`` (e = ``eval.class_exponent``,
v = ``eval.objectness_weight``), the best ``eval.pair_topk``
pairs are kept, and NMS only suppresses a pair by a better one of the *same* class. A mask the
model is unsure about is thus proposed under its two or three likeliest classes, which the
benchmark's per-class AP rewards (each class's ranking is separate) and the argmax rule throws
away. ``p(class | query)`` mixes the class head with the semantic head's probabilities averaged
over the mask (``eval.semantic_weight``): the semantic head is supervised at every point, the
class head only at the few matched queries, so the semantic head knows the classes better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config.schema import EvalConfig
from ..data.labels import LabelSet
from ..data.loading.batch import Batch
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
    class_prob: np.ndarray | None = None  # (K,C) p(class | instance), from ``predict_objects`` only


def world_boxes(boxes: torch.Tensor, points: torch.Tensor, points_aug: torch.Tensor) -> torch.Tensor:
    """Boxes from the ``points_aug`` frame to the world, for one sample evaluated without augmentation
    (``points_aug = points − mean``, so only the centre moves)."""
    shift = (points - points_aug).mean(0)
    return torch.cat([boxes[:, :3] + shift, boxes[:, 3:]], dim=-1)


def mask_ious(masks: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(K,K) IoU of superpoint masks, each superpoint weighted by its size (its point count)."""
    masks_f = masks.float()
    masks_w = masks_f * weights
    inter = masks_w @ masks_f.T
    area = masks_w.sum(-1)
    return inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-6)


def mask_nms(
    masks: torch.Tensor,
    weights: torch.Tensor,
    scores: torch.Tensor,
    iou: float,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy NMS on superpoint masks; returns kept rows, best first.

    With ``classes`` a row is only suppressed by a better row of the same class (class-aware).
    """
    order = scores.argsort(descending=True)
    ious = mask_ious(masks, weights)
    same = classes[:, None] == classes[None, :] if classes is not None else torch.ones_like(ious, dtype=torch.bool)
    overlaps = (ious > iou) & same
    keep: list[int] = []
    suppressed = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return torch.as_tensor(keep, dtype=torch.long, device=scores.device)


def class_probabilities(
    cls_logits: torch.Tensor,
    semantic_logits: torch.Tensor | None,
    masks: torch.Tensor,
    weights: torch.Tensor,
    thing_columns: torch.Tensor | None,
    semantic_weight: float,
) -> torch.Tensor:
    """(Q,C) p(class | query is an object).

    Class head: softmax over the object classes only (objectness already scores "no object").
    Semantic head: its per-superpoint probabilities of the thing classes, averaged over the
    query's binary mask (superpoints weighted by size); mixed in with ``semantic_weight``.
    """
    cls_prob = cls_logits[:, :-1].float().softmax(-1)
    if semantic_logits is None or thing_columns is None or semantic_weight <= 0:
        return cls_prob
    sem_prob = semantic_logits.float().softmax(-1)[:, thing_columns]  # (S,C)
    masks_w = masks.float() * weights
    mask_sem = (masks_w @ sem_prob) / masks_w.sum(-1, keepdim=True).clamp(min=1e-6)
    return (1 - semantic_weight) * cls_prob + semantic_weight * mask_sem


def rank_pairs(
    class_prob: torch.Tensor,
    quality: torch.Tensor,
    masks: torch.Tensor,
    weights: torch.Tensor,
    cfg: EvalConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query, class, score) of the proposed instances, best first.

    Pairs score ``class_prob^e · quality`` (e = ``cfg.class_exponent``: below 1 a confident mask
    keeps its rank under its second and third class, where an uncertain label would otherwise
    bury it); the ``cfg.pair_topk`` best pairs of non-empty queries above ``cfg.score_threshold``
    go through class-aware NMS; at most ``cfg.topk`` survive.
    """
    num_queries, num_classes = class_prob.shape
    pair_scores = class_prob.pow(cfg.class_exponent) * quality[:, None]
    pair_scores = pair_scores.masked_fill(~masks.any(-1)[:, None], -1.0)
    k = min(cfg.pair_topk, num_queries * num_classes)
    scores, flat = pair_scores.reshape(-1).topk(k)
    keep = scores > max(cfg.score_threshold, 0.0)
    scores, flat = scores[keep], flat[keep]
    queries, classes = flat // num_classes, flat % num_classes
    if scores.numel():
        kept = mask_nms(masks[queries], weights, scores, cfg.nms_iou, classes)[: cfg.topk]
        queries, classes, scores = queries[kept], classes[kept], scores[kept]
    return queries, classes, scores


def thing_semantic_columns(labels: LabelSet, device: torch.device | str) -> torch.Tensor:
    """Column of each instance class (thing) among the semantic head's classes."""
    column = {raw: i for i, raw in enumerate(labels.raw_ids)}
    return torch.as_tensor([column[raw] for raw in labels.thing_raw_ids], dtype=torch.long, device=device)


@dataclass
class QueryScores:
    """One sample's queries, scored: what both ways of proposing instances start from."""

    binary: torch.Tensor  # (Q,S) bool superpoint masks
    sp_size: torch.Tensor  # (S,) points per superpoint
    sp_of_point: torch.Tensor  # (N,) superpoint of each point
    quality: torch.Tensor  # (Q,) mask quality · objectness^v
    class_prob: torch.Tensor  # (Q,C) p(class | query)


def query_scores(out: ModelOutput, batch: Batch, b: int, cfg: EvalConfig, thing_columns: torch.Tensor | None) -> QueryScores:
    sp = out.sp_slices[b]
    sp_of_point = batch.superpoints[batch.point_batch == b] - sp.start
    sp_size = torch.bincount(sp_of_point, minlength=sp.stop - sp.start).float()
    dec = out.decoder[b]
    mask_prob = dec.mask_logits[-1].sigmoid()
    binary = mask_prob > cfg.mask_threshold
    inside = (mask_prob * binary * sp_size).sum(-1) / (binary.float() * sp_size).sum(-1).clamp(min=1)
    quality = inside * dec.objectness[-1].sigmoid() ** cfg.objectness_weight  # weight 0: exactly 1
    class_prob = class_probabilities(dec.cls_logits[-1], dec.semantic_logits, binary, sp_size, thing_columns, cfg.semantic_weight)
    return QueryScores(binary, sp_size, sp_of_point, quality, class_prob)


def _prediction(
    out: ModelOutput,
    batch: Batch,
    b: int,
    q: QueryScores,
    queries: torch.Tensor,
    classes: torch.Tensor,
    scores: torch.Tensor,
    semantic: torch.Tensor,
    class_prob: torch.Tensor | None = None,
) -> FramePrediction:
    sel = batch.point_batch == b
    dec = out.decoder[b]
    return FramePrediction(
        key=batch.keys[b],
        masks=q.binary[queries][:, q.sp_of_point].cpu().numpy(),
        classes=classes.cpu().numpy(),
        scores=scores.cpu().numpy(),
        semantic=semantic[sel].cpu().numpy(),
        boxes=None
        if dec.boxes is None
        else world_boxes(dec.boxes[queries], batch.points[sel], batch.points_aug[sel]).cpu().numpy(),
        embeddings=None if dec.merge_embed is None else dec.merge_embed[queries].cpu().numpy(),
        class_prob=None if class_prob is None else class_prob.cpu().numpy(),
    )


@torch.no_grad()
def predict_frames(out: ModelOutput, batch: Batch, cfg: EvalConfig, labels: LabelSet | None = None) -> list[FramePrediction]:
    """Per sample: instances as ranked (query, class) pairs and the semantic argmax per point.

    ``labels`` lets the instance labels use the semantic head (``cfg.semantic_weight``);
    without it they come from the class head alone.
    """
    semantic = out.semantic_logits.argmax(-1)
    thing_columns = thing_semantic_columns(labels, semantic.device) if labels is not None else None
    results = []
    for b in range(len(out.sp_slices)):
        q = query_scores(out, batch, b, cfg, thing_columns)
        queries, classes, scores = rank_pairs(q.class_prob, q.quality, q.binary, q.sp_size, cfg)
        results.append(_prediction(out, batch, b, q, queries, classes, scores, semantic))
    return results


@torch.no_grad()
def predict_objects(out: ModelOutput, batch: Batch, cfg: EvalConfig, labels: LabelSet | None = None) -> list[FramePrediction]:
    """Per sample: one instance per distinct mask, with its whole class distribution.

    What an online merge needs: the pairs of ``predict_frames`` repeat a mask under several
    classes, and the class of a partial view is the least reliable thing about it. Here queries
    are ranked by mask quality alone, class-agnostic NMS keeps one per object, and each keeps
    ``class_prob`` so the scene can decide the class from every view (``classes`` = argmax).
    """
    semantic = out.semantic_logits.argmax(-1)
    thing_columns = thing_semantic_columns(labels, semantic.device) if labels is not None else None
    results = []
    for b in range(len(out.sp_slices)):
        q = query_scores(out, batch, b, cfg, thing_columns)
        quality = q.quality.masked_fill(~q.binary.any(-1), -1.0)
        candidates = torch.nonzero(quality > max(cfg.score_threshold, 0.0)).reshape(-1)
        kept = mask_nms(q.binary[candidates], q.sp_size, quality[candidates], cfg.nms_iou)[: cfg.topk]
        queries = candidates[kept]
        class_prob = q.class_prob[queries]
        results.append(_prediction(out, batch, b, q, queries, class_prob.argmax(-1), quality[queries], semantic, class_prob))
    return results
