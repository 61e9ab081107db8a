"""Point-wise fusion gates between the 2D and 3D feature of each point.

α weighs the 2D feature. It is held at 0.5 during warm-up (the gate MLP would otherwise latch
onto whichever branch is less noisy at initialisation), and points that no view sees get a
small fixed α so gradients still reach the 2D head without trusting it:
``α ← α·valid + no_view_alpha·(1 − valid)``, ``fused = α·f2D + (1 − α)·f3D``.

``model.fusion.mode: residual`` adds the 2D feature to the 3D one instead,
``fused = f3D + α·W f2D`` with ``W`` zero-initialised: the network starts as the 3D-only one and
takes from the image only what lowers the loss. The convex ``mix`` halves the 3D feature from the
first step and, on the seeded ablation, cost the geometric classes' masks.

Three gates, chosen by ``model.fusion.gate``:

- ``plain``: α = σ(MLP[f2D‖f3D]) only.
- ``lite`` (LiteFusionGate): the same α plus SE channel re-weighting of the mix,
  ``w = σ(MLP(mean over the sample's points))``; ≈0.12 M parameters at dim 256.
- ``enhanced``: a per-channel α from a wider MLP over [f2D, f3D, f2D⊙f3D, |f2D−f3D|], plus SE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import FusionConfig
from ..ops import scatter_mean


class SqueezeExcite(nn.Module):
    """Channel weights from the sample's mean feature: global context at the cost of one MLP."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, feats: torch.Tensor, batch: torch.Tensor, num_samples: int) -> torch.Tensor:
        return feats * torch.sigmoid(self.net(scatter_mean(feats, batch, num_samples)))[batch]


class FusionGate(nn.Module):
    """``plain`` and ``lite`` gates: one α per point (``lite`` adds SE)."""

    def __init__(self, dim: int, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.alpha_mlp = self._alpha_mlp(dim, cfg)
        self.se = SqueezeExcite(dim, cfg.se_hidden) if cfg.gate != "plain" else None
        self.inject = nn.Linear(dim, dim, bias=False) if cfg.mode == "residual" else None
        if self.inject is not None:
            nn.init.zeros_(self.inject.weight)

    @staticmethod
    def _alpha_mlp(dim: int, cfg: FusionConfig) -> nn.Module:
        return nn.Sequential(nn.Linear(2 * dim, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, 1))

    def raw_alpha(self, f2d: torch.Tensor, f3d: torch.Tensor) -> torch.Tensor:
        """(N, 1) or (N, dim): α before warm-up and visibility are applied.

        The first layer reads [f2D‖f3D] as two products with its halves (same weights, no
        (N, 2·dim) concatenation to copy forward and split backward)."""
        first, rest = self.alpha_mlp[0], self.alpha_mlp[1:]
        dim = f2d.shape[-1]
        hidden = F.linear(f2d, first.weight[:, :dim]) + F.linear(f3d, first.weight[:, dim:], first.bias)
        return torch.sigmoid(rest(hidden))

    def forward(
        self,
        f2d: torch.Tensor,
        f3d: torch.Tensor,
        valid: torch.Tensor,
        batch: torch.Tensor,
        num_samples: int,
        iteration: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns fused unit features (N,dim) and α per point (N,) (``enhanced``: its channel mean)."""
        alpha = self.raw_alpha(f2d, f3d)
        if self.training and iteration < self.cfg.warmup_iters:
            alpha = torch.full_like(alpha, 0.5) + 0.0 * alpha  # keep the graph, fix the value
        valid_f = valid.to(alpha.dtype)[:, None]
        alpha = alpha * valid_f + self.cfg.no_view_alpha * (1.0 - valid_f)
        if self.inject is not None:
            fused = f3d + alpha * self.inject(f2d)
        else:
            dtype = torch.promote_types(torch.promote_types(f2d.dtype, f3d.dtype), alpha.dtype)  # lerp wants one (AMP)
            fused = torch.lerp(f3d.to(dtype), f2d.to(dtype), alpha.to(dtype))  # α·f2D + (1 − α)·f3D in one op
        if self.se is not None:
            fused = self.se(fused, batch, num_samples)
        return F.normalize(fused, dim=-1), alpha.mean(dim=-1)


class EnhancedFusionGate(FusionGate):
    """A per-channel α that also sees the agreement of the two features (product and difference)."""

    @staticmethod
    def _alpha_mlp(dim: int, cfg: FusionConfig) -> nn.Module:
        h = cfg.enhanced_hidden
        return nn.Sequential(nn.Linear(4 * dim, h), nn.LayerNorm(h), nn.GELU(), nn.Linear(h, dim))

    def raw_alpha(self, f2d: torch.Tensor, f3d: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.alpha_mlp(torch.cat([f2d, f3d, f2d * f3d, (f2d - f3d).abs()], dim=-1)))


def build_gate(dim: int, cfg: FusionConfig) -> FusionGate:
    return EnhancedFusionGate(dim, cfg) if cfg.gate == "enhanced" else FusionGate(dim, cfg)
