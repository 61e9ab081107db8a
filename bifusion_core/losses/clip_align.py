"""2D-3D alignment: pull each seen point's 3D feature towards its CLIP-derived 2D feature."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_alignment_loss(f2d: torch.Tensor, f3d: torch.Tensor, valid: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """−log σ(cos(f2D, f3D)/τ) averaged over points a view sees; 0 when none is seen."""
    if not bool(valid.any()):
        return f3d.sum() * 0.0
    cos = (F.normalize(f2d[valid], dim=-1) * F.normalize(f3d[valid], dim=-1)).sum(-1)
    return -F.logsigmoid(cos / temperature).mean()
