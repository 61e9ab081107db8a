"""Point-wise fusion gate between the 2D and 3D feature of each point.

α weighs the 2D feature. It is held at 0.5 during warm-up (the gate MLP would otherwise
latch onto whichever branch is less noisy at initialisation), and points that no view
sees get a small fixed α so gradients still reach the 2D head without trusting it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import FusionConfig


def scatter_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    out = values.new_zeros(size, values.shape[1])
    out.index_add_(0, index, values)
    count = torch.bincount(index, minlength=size).clamp(min=1).to(values.dtype)
    return out / count[:, None]


class FusionGate(nn.Module):
    """``plain``: α = σ(MLP[f2D‖f3D]). ``lite``: the same plus SE channel re-weighting per sample."""

    def __init__(self, dim: int, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.alpha_mlp = nn.Sequential(nn.Linear(2 * dim, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, 1))
        self.se = None
        if cfg.gate == "lite":
            self.se = nn.Sequential(nn.Linear(dim, dim // 4), nn.ReLU(inplace=True), nn.Linear(dim // 4, dim))

    def forward(
        self,
        f2d: torch.Tensor,
        f3d: torch.Tensor,
        valid: torch.Tensor,
        batch: torch.Tensor,
        num_samples: int,
        iteration: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (fused unit features (N,dim), α (N,))."""
        alpha = torch.sigmoid(self.alpha_mlp(torch.cat([f2d, f3d], dim=-1))).squeeze(-1)
        if self.training and iteration < self.cfg.warmup_iters:
            alpha = torch.full_like(alpha, 0.5) + 0.0 * alpha  # keep the graph, fix the value
        valid_f = valid.to(alpha.dtype)
        alpha = alpha * valid_f + self.cfg.no_view_alpha * (1.0 - valid_f)
        fused = alpha[:, None] * f2d + (1.0 - alpha[:, None]) * f3d
        if self.se is not None:
            pooled = scatter_mean(fused, batch, num_samples)
            fused = fused * torch.sigmoid(self.se(pooled))[batch]
        return F.normalize(fused, dim=-1), alpha
