"""2D-3D alignment: pull each seen point's 3D feature towards its CLIP-derived 2D feature.

The 2D side is mostly a teacher: only ``gradient_flow`` (5 %) of the alignment gradient reaches
it. With the full gradient the 2D head would meet the 3D branch halfway and learn to predict
3D features, discarding exactly what 3D cannot see (texture); a small share still lets the
2D projection adapt to the common space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scale_gradient(x: torch.Tensor, share: float) -> torch.Tensor:
    """Same value as ``x``; only ``share`` of the incoming gradient flows back through it."""
    if share >= 1.0:
        return x
    return share * x + (1.0 - share) * x.detach()


def clip_alignment_loss(*args, **kwargs) -> torch.Tensor:
    """−log σ(cos(f2D, f3D)/τ) averaged over points a view sees; 0 when none is seen."""
    total, seen = clip_alignment_sums(*args, **kwargs)
    return total / seen.clamp(min=1)


def clip_alignment_sums(
    f2d: torch.Tensor, f3d: torch.Tensor, valid: torch.Tensor, temperature: float = 0.07, gradient_flow: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """−log σ(cos(f2D, f3D)/τ) summed over points a view sees, and how many are seen.

    A masked sum over all points rather than a selection of the seen ones: the same value, without
    the gather and scatter that indexing costs in both passes."""
    f2d = scale_gradient(f2d, gradient_flow)
    cos = (F.normalize(f2d, dim=-1) * F.normalize(f3d, dim=-1)).sum(-1)
    seen = valid.to(cos.dtype)
    return -(F.logsigmoid(cos / temperature) * seen).sum(), seen.sum()
