"""Tiny-SA: a small self-attention neck after the 3D backbone.

Sparse convolutions only see a few voxels around each point; a couple of attention layers over
coarse tokens (superpoints, or voxels pooled into cells) give every point the context of the
whole sample at a cost that grows with the number of tokens, not points. The result is added
back to each point through a zero-initialised projection, so enabling the neck on top of a
trained 3D backbone starts from exactly that backbone's features.

``pos_embed`` (the token-centre encoding) is named so that the optimiser leaves it out of weight
decay and learning-rate scaling (``engine.optimizer.parameter_groups``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import TinySAConfig
from ..ops import scatter_mean


class TinySABlock(nn.Module):
    """Pre-norm transformer block: attention among one sample's tokens, then an FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h + pos, h + pos, h, key_padding_mask=padding, need_weights=False)[0]
        return x + self.ffn(self.norm2(x))


def pad_by_sample(values: torch.Tensor, batch: torch.Tensor, num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows grouped by sample → (B, L, C) padded, its padding mask (B, L) and each row's slot."""
    order = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch, minlength=num_samples)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(batch)
    slot[order] = torch.arange(len(batch), device=batch.device) - starts[batch[order]]
    length = int(counts.max()) if len(batch) else 0
    padded = values.new_zeros(num_samples, length, values.shape[1])
    padded[batch, slot] = values
    padding = torch.ones(num_samples, length, dtype=torch.bool, device=values.device)
    padding[batch, slot] = False
    return padded, padding, slot


class TinySANeck(nn.Module):
    def __init__(self, dim: int, cfg: TinySAConfig):
        super().__init__()
        self.cfg = cfg
        self.pos_embed = nn.Sequential(nn.Linear(3, dim), nn.GELU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(TinySABlock(dim, cfg.num_heads, cfg.ffn_dim) for _ in range(cfg.num_layers))
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def voxel_cells(self, xyz: torch.Tensor, point_batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coarse cells of ``cell_size`` per sample → (token of each point, sample of each token)."""
        cell = torch.floor(xyz / self.cfg.cell_size).long()
        cell = cell - cell.min(dim=0).values
        key = torch.cat([point_batch[:, None], cell], dim=1)
        keys, token = torch.unique(key, dim=0, return_inverse=True)
        return token, keys[:, 0]

    def forward(
        self,
        feats: torch.Tensor,
        xyz: torch.Tensor,
        point_batch: torch.Tensor,
        num_samples: int,
        superpoints: torch.Tensor,
        sp_batch: torch.Tensor,
    ) -> torch.Tensor:
        """Point features (N,dim) → refined unit point features (N,dim)."""
        if self.cfg.tokens == "superpoint":
            token, token_batch = superpoints, sp_batch
        else:
            token, token_batch = self.voxel_cells(xyz, point_batch)
        num_tokens = token_batch.shape[0]
        tokens = scatter_mean(feats, token, num_tokens)
        centres = scatter_mean(xyz, token, num_tokens)
        centres = centres - scatter_mean(centres, token_batch, num_samples)[token_batch]
        x, padding, slot = pad_by_sample(tokens, token_batch, num_samples)
        pos, _, _ = pad_by_sample(self.pos_embed(centres), token_batch, num_samples)
        for block in self.blocks:
            x = block(x, pos, padding)
        refined = x[token_batch, slot]
        return F.normalize(feats + self.out(refined)[token], dim=-1)
