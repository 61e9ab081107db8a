"""Point features → superpoint tokens with geometry-aware weights (the decoder works on superpoints).

A plain mean lets boundary points that bled in from a neighbouring object (depth edges, a
superpoint straddling two surfaces) count as much as its core. Here every point gets a weight
from where it sits in its superpoint's shape: its offset from the centre in units of the
superpoint's radius, read next to a max-pooled descriptor of the whole shape. The token is the
*normalised* weighted mean of member features (weights sum to one, so a superpoint's scale does
not depend on how the weights drift) plus a projection of the shape descriptor.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops import scatter_max, scatter_mean


class SuperpointPooling(nn.Module):
    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.local = nn.Sequential(nn.Linear(4, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.weight = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.shape_proj = nn.Linear(hidden, dim)
        self.pos = nn.Sequential(nn.Linear(3, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, feats: torch.Tensor, xyz: torch.Tensor, sp_index: torch.Tensor, sp_batch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (superpoint features (S,dim), positional encodings (S,dim), centres (S,3) in ``xyz``'s frame)."""
        num_sp = sp_batch.shape[0]
        centres = scatter_mean(xyz, sp_index, num_sp)
        offset = xyz - centres[sp_index]
        dist = offset.norm(dim=-1, keepdim=True)
        radius = scatter_max(dist, sp_index, num_sp).clamp(min=1e-3)[sp_index]
        local = self.local(torch.cat([offset / radius, dist / radius], dim=-1))
        shape = scatter_max(local, sp_index, num_sp)
        w = 2.0 * torch.sigmoid(self.weight(torch.cat([local, shape[sp_index]], dim=-1)))  # (N,1)
        weighted = scatter_mean(w * feats, sp_index, num_sp) / scatter_mean(w, sp_index, num_sp).clamp(min=1e-6)
        sp_feats = weighted + self.shape_proj(shape)
        # num_sp slots ≥ the number of samples (the extra rows stay empty): no host read of sp_batch.max()
        pos = self.pos(centres - scatter_mean(centres, sp_batch, num_sp)[sp_batch])
        return self.norm(sp_feats), pos, centres
