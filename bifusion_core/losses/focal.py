"""Focal classification loss for the decoder's queries (most of them match no object).

With one query per superpoint, unmatched ("no object") queries outnumber matched ones by an
order of magnitude; plain cross-entropy is then dominated by easy negatives. The focal term
(1 − p_t)^γ silences well-classified queries, and α balances objects against no-object.
The loss is averaged over all queries; dividing by the number of object queries instead (as
RetinaNet does) scored lower on the synthetic ablation (class-agnostic AP50 0.40 vs 0.49-0.60).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
