"""Geometric encoding of every point, injected into both branches by FiLM.

Concatenating geometry to the features would widen every downstream layer; FiLM instead lets
the geometry scale and shift the 2D and 3D features, ``(1 + γ)·f + β``, with one small MLP.
The last layer starts at zero, so the module is the identity until training says otherwise
(a BiFusion model initialised from a 3D-only run starts exactly where that run ended).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config.schema import FilmConfig
from ..ops import scatter_mean, scatter_min_max

FIXED_TERMS = 16  # xyz (3) + box size (3) + pose-relative (9) + height (1)


def geometry_dim(num_freqs: int) -> int:
    """Width of the encoding: 16 fixed terms + sin/cos of xyz at ``num_freqs`` frequencies (8 → 64)."""
    return FIXED_TERMS + 6 * num_freqs


class GeometryEncoding(nn.Module):
    """Per point: xyz/diag, box size/diag, pose-relative terms, height/diag, Fourier terms.

    Scene terms use the 3D branch's (augmented, sample-centred) coordinates and the sample's box
    diagonal, so they are scale-free. The 9 pose-relative terms come from the real camera: the
    point in its frame's camera coordinates / diag, its unit viewing ray, and gravity (world +z)
    seen from the camera, which tells the network how the view is tilted. The Fourier
    frequencies are ``π·2^w`` with learnable ``w`` initialised to 0..num_freqs-1.
    """

    def __init__(self, num_freqs: int = 8):
        super().__init__()
        self.log_freqs = nn.Parameter(torch.arange(num_freqs, dtype=torch.float32))
        self.out_dim = geometry_dim(num_freqs)

    def forward(
        self,
        xyz: torch.Tensor,
        point_batch: torch.Tensor,
        num_samples: int,
        points_world: torch.Tensor,
        world_to_camera: torch.Tensor,
        point_frame: torch.Tensor,
    ) -> torch.Tensor:
        lo, hi = scatter_min_max(xyz, point_batch, num_samples)
        size = hi - lo
        diag = size.norm(dim=-1, keepdim=True).clamp(min=1e-3)
        diag_p = diag[point_batch]
        centred = xyz - scatter_mean(xyz, point_batch, num_samples)[point_batch]
        rel = centred / diag_p
        height = (xyz[:, 2:3] - lo[point_batch, 2:3]) / diag_p
        world_to_cam = world_to_camera.to(xyz.dtype)  # (F,4,4), inverted once in the data path
        rot = world_to_cam[point_frame, :3, :3]
        cam = (rot @ points_world[:, :, None]).squeeze(-1) + world_to_cam[point_frame, :3, 3]
        ray = cam / cam.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        gravity = rot[:, :, 2]  # world +z in camera coordinates
        angles = rel[:, :, None] * (math.pi * torch.pow(2.0, self.log_freqs))  # (N,3,F)
        return torch.cat(
            [
                rel,
                (size / diag)[point_batch],
                cam / diag_p,
                ray,
                gravity,
                height,
                angles.sin().flatten(1),
                angles.cos().flatten(1),
            ],
            dim=-1,
        )


class GeometryFiLM(nn.Module):
    """Geometry → MLP(64→128, SiLU, 128→2·dim) → (γ, β); identity at initialisation."""

    def __init__(self, dim: int, cfg: FilmConfig):
        super().__init__()
        self.encoding = GeometryEncoding(cfg.num_freqs)
        self.mlp = nn.Sequential(nn.Linear(self.encoding.out_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 2 * dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, *geometry: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Arguments as ``GeometryEncoding.forward``; returns the scale 1 + γ and the shift β, each (N, dim)
        (the scale once, as both branches are modulated with it)."""
        gamma, beta = self.mlp(self.encoding(*geometry)).chunk(2, dim=-1)
        return 1.0 + gamma, beta

    @staticmethod
    def modulate(feats: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``scale · feats + shift`` in one fused op."""
        return torch.addcmul(shift, scale, feats)
