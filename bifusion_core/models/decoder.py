"""Superpoint query decoder (ESAM-style): queries are superpoints, masks are over superpoints.

Each layer: masked cross-attention to all superpoint tokens, self-attention among queries,
FFN. The class, mask and objectness heads run after the initial projection and after every
layer so that each layer can be supervised (auxiliary losses) and the next layer's attention
mask comes from the previous prediction. The semantic head reads every superpoint token (not
only the sampled queries), so all points get a semantic label at training time too.

Two heads read the final queries only, for online merging across frames (ESAM): a merge
embedding (unit vector; queries of one object in different frames should agree) and an
axis-aligned box. A query's box centre is predicted as an offset from its seed superpoint's
centre (the mean of that superpoint's points in the ``points_aug`` frame), so the head only
learns the short way from the visible part to the object's middle; sizes are predicted in log
space, so they stay positive and scale errors count alike for small and large objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import DecoderConfig


def mlp(dim_in: int, dim_hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.ReLU(inplace=True), nn.Linear(dim_hidden, dim_out))


LOG_SIZE_RANGE = (-7.0, 4.0)  # box edges between ~1 mm and ~55 m: exp() can neither vanish nor overflow


@dataclass
class DecoderOutput:
    """Per layer (initial + each decoder layer): class (Q,C+1), mask (Q,S) and objectness (Q,) logits.

    From the final queries only: ``merge_embed`` (Q,D) L2-normalised merge embedding and ``boxes``
    (Q,6) axis-aligned boxes (cx, cy, cz, sx, sy, sz) in the ``points_aug`` frame of the sample.
    """

    cls_logits: list[torch.Tensor]
    mask_logits: list[torch.Tensor]
    objectness: list[torch.Tensor]
    query_index: torch.Tensor  # which superpoints seeded the queries
    semantic_logits: torch.Tensor  # (S,C_sem) per superpoint
    merge_embed: torch.Tensor | None = None  # (Q,D) unit
    boxes: torch.Tensor | None = None  # (Q,6) centre + size, points_aug frame


class MergeHead(nn.Module):
    """dim → 2·dim → dim MLP with LayerNorms, output L2-normalised (ESAM-E's merge head)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.ReLU(inplace=True), nn.Linear(2 * dim, dim), nn.LayerNorm(dim)
        )

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(q), dim=-1)


class BoxHead(nn.Module):
    """Query → (centre offset from its seed superpoint's centre, log size) → (Q,6) centre + size."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = mlp(dim, dim, 6)

    def forward(self, q: torch.Tensor, seed_centres: torch.Tensor) -> torch.Tensor:
        raw = self.net(q)
        centre = seed_centres + raw[:, :3]
        size = raw[:, 3:].clamp(*LOG_SIZE_RANGE).exp()
        return torch.cat([centre, size], dim=-1)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, cfg: DecoderConfig):
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, cfg.num_heads, dropout=cfg.dropout)
        self.self_attn = nn.MultiheadAttention(dim, cfg.num_heads, dropout=cfg.dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(), nn.Linear(cfg.ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, q, q_pos, kv, kv_pos, attn_mask):
        q = self.norms[0](q + self.cross(q + q_pos, kv + kv_pos, kv, attn_mask=attn_mask, need_weights=False)[0])
        q = self.norms[1](q + self.self_attn(q + q_pos, q + q_pos, q, need_weights=False)[0])
        return self.norms[2](q + self.ffn(q))


class QueryDecoder(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_semantic: int, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.query_proj = mlp(dim, dim, dim)
        self.mask_feat = mlp(dim, dim, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, cfg) for _ in range(cfg.num_layers))
        self.out_norm = nn.LayerNorm(dim)
        self.cls_head = nn.Linear(dim, num_classes + 1)
        self.mask_embed = mlp(dim, dim, dim)
        self.objectness_head = nn.Linear(dim, 1)
        self.semantic_head = mlp(dim, dim, num_semantic)
        self.merge_head = MergeHead(dim)
        self.box_head = BoxHead(dim)

    def _heads(self, q: torch.Tensor, mask_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self.out_norm(q)
        return self.cls_head(q), self.mask_embed(q) @ mask_feats.T, self.objectness_head(q).squeeze(-1)

    def forward(self, sp_feats: torch.Tensor, sp_pos: torch.Tensor, sp_centres: torch.Tensor) -> DecoderOutput:
        """One sample: ``sp_feats``/``sp_pos`` (S,dim), ``sp_centres`` (S,3) superpoint centres in the
        ``points_aug`` frame. At training a random subset seeds the queries."""
        num_sp = sp_feats.shape[0]
        if self.training:
            lo, hi = self.cfg.query_ratio
            ratio = float(torch.empty(()).uniform_(lo, hi))
            keep = max(1, int(round(ratio * num_sp)))
            query_index = torch.randperm(num_sp, device=sp_feats.device)[:keep]
        else:
            query_index = torch.arange(num_sp, device=sp_feats.device)
        q = self.query_proj(sp_feats[query_index])
        q_pos = sp_pos[query_index]
        mask_feats = self.mask_feat(sp_feats)
        cls, masks, obj = self._heads(q, mask_feats)
        out = DecoderOutput([cls], [masks], [obj], query_index, self.semantic_head(sp_feats))
        for layer in self.layers:
            attn_mask = masks.detach().sigmoid() < 0.5
            attn_mask[attn_mask.all(dim=-1)] = False  # a query may not attend to nothing
            q = layer(q, q_pos, sp_feats, sp_pos, attn_mask)
            cls, masks, obj = self._heads(q, mask_feats)
            out.cls_logits.append(cls)
            out.mask_logits.append(masks)
            out.objectness.append(obj)
        final = self.out_norm(q)
        out.merge_embed = self.merge_head(final)
        out.boxes = self.box_head(final, sp_centres[query_index])
        return out
