"""Class losses for the decoder's queries, most of which match no object (``loss.cls_loss``).

With one query per sampled superpoint, unmatched ("no object") queries outnumber matched ones
by an order of magnitude. Two ways to keep them from drowning the object classes:

- ``focal``: the term (1 − p_t)^γ silences well-classified queries and α balances objects
  against no-object, averaged over all queries (dividing by the number of object queries, as
  RetinaNet does, scored lower: docs/RESULTS.md).
- ``ce``: cross-entropy whose no-object target weighs ``no_object_weight`` (Mask2Former /
  OneFormer3D), normalised by the summed weights, so the few matched queries carry most of the
  loss. Objectness ranks the masks and only the object columns label them, so the no-object
  column needs no focal balance. The demo keeps focal: ``ce`` gains no per-class AP50 once the
  class head is mixed with the semantic head (docs/RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.schema import LossConfig


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss over (Q, C+1) logits; the last class is "no object".

    ``−α_t (1 − p_t)^γ log p_t`` with α_t = α for object targets and 1 − α for no-object,
    averaged over queries; 0 for no queries.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None]).squeeze(1)
    no_object = logits.shape[1] - 1
    alpha_t = torch.where(target == no_object, 1.0 - alpha, alpha)
    return (-alpha_t * (1.0 - log_p.exp()).pow(gamma) * log_p).mean()


def no_object_cross_entropy(logits: torch.Tensor, target: torch.Tensor, no_object_weight: float = 0.1) -> torch.Tensor:
    """Cross-entropy over (Q, C+1) logits, the last class ("no object") weighted ``no_object_weight``,
    averaged over the summed weights; 0 for no queries."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    weight = torch.ones(logits.shape[1], device=logits.device)
    weight[-1] = no_object_weight
    return F.cross_entropy(logits.float(), target, weight=weight)


def query_class_loss(logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """The class loss ``cfg.cls_loss`` names, with its settings."""
    if cfg.cls_loss == "ce":
        return no_object_cross_entropy(logits, target, cfg.no_object_weight)
    return focal_loss(logits, target, cfg.focal_alpha, cfg.focal_gamma)
