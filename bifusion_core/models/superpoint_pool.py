"""Point features → superpoint tokens (the decoder works on superpoints, not points)."""

from __future__ import annotations

import torch
from torch import nn

from .fusion import scatter_mean


class SuperpointPooling(nn.Module):
    """Mean of member features plus a learned encoding of the superpoint's centre.

    Centres are taken relative to their sample's mean so the encoding is translation-free.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.pos = nn.Sequential(nn.Linear(3, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, feats: torch.Tensor, xyz: torch.Tensor, sp_index: torch.Tensor, sp_batch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (superpoint features (S,dim), positional encodings (S,dim))."""
        num_sp = sp_batch.shape[0]
        sp_feats = scatter_mean(feats, sp_index, num_sp)
        centres = scatter_mean(xyz, sp_index, num_sp)
        sample_mean = scatter_mean(centres, sp_batch, int(sp_batch.max()) + 1 if num_sp else 0)
        pos = self.pos(centres - sample_mean[sp_batch])
        return self.norm(sp_feats), pos
