"""Projection of stored CLIP patch tokens into the shared feature space, then onto points."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.projection import sample_feature_maps

CLIP_WIDTH = 768


class ProjectionHead2D(nn.Module):
    """LayerNorm(768) → GELU → Linear(768→hidden) → GELU → Linear(hidden→dim), L2-normalised.

    Applied per patch token before sampling, so its cost scales with the token grid, not the points.
    """

    def __init__(self, dim: int, hidden: int = 512, in_dim: int = CLIP_WIDTH):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.GELU(), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B,768,h,w) → (B,dim,h,w) unit vectors."""
        b, c, h, w = tokens.shape
        out = self.net(tokens.flatten(2).transpose(1, 2))
        return F.normalize(out, dim=-1).transpose(1, 2).reshape(b, -1, h, w)

    def point_features(
        self, fmap: torch.Tensor, uv: torch.Tensor, point_frame: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Bilinear samples of each frame's map at its points' pixels, re-normalised."""
        return F.normalize(sample_feature_maps(fmap, uv, point_frame, image_size), dim=-1)
