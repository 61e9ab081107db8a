"""Memory adapter: features of a scan's earlier frames, kept per world voxel, fused into the current one.

ESAM fuses a sparse memory of past frames into each U-Net level; this is the small version: one
sparse voxel grid (world coordinates, ``model.memory.voxel_size``) holding the running mean of
the 3D point features (after the U-Net and Tiny-SA) written by earlier frames, read at the
current frame's points and added through a zero-initialised linear map, so an untrained adapter
is exactly the identity and the features stay unit vectors. Writes are detached: the adapter
learns how to use the past, not to reshape it.

Two regimes share the code. Training and window evaluation: the memory is rebuilt inside every
sample from its own frames in time order (frame t reads frames < t), then dropped. Streaming
(``with model.memory.stream(): ...`` or ``persistent = True`` + ``reset()`` per scan): it lives
across forward calls, one frame after another, until ``reset()``. Its size is bounded by the
scanned volume (one ``dim`` vector per occupied voxel), not by the number of frames.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

OFFSET = 1 << 20  # voxel coordinates in [-2^20, 2^20) pack into one int64 key (±52 km at 5 cm)


def voxel_keys(points: torch.Tensor, voxel_size: float) -> torch.Tensor:
    grid = torch.floor(points / voxel_size).long() + OFFSET
    return (grid[:, 0] << 42) | (grid[:, 1] << 21) | grid[:, 2]


class VoxelMemory(nn.Module):
    def __init__(self, dim: int, voxel_size: float = 0.05):
        super().__init__()
        self.voxel_size = float(voxel_size)
        self.fuse = nn.Linear(2 * dim, dim)
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)
        self.persistent = False
        self.reset()

    def reset(self) -> None:
        """Forget everything (call at the start of every scan)."""
        self.keys: torch.Tensor | None = None  # (M,) sorted int64
        self.feats: torch.Tensor | None = None  # (M,dim) running means
        self.counts: torch.Tensor | None = None  # (M,) writes per voxel

    @contextmanager
    def stream(self) -> Iterator["VoxelMemory"]:
        """Streaming one scan: memory persists across forward calls inside the block, empty at both ends."""
        self.reset()
        self.persistent = True
        try:
            yield self
        finally:
            self.persistent = False
            self.reset()

    @property
    def num_voxels(self) -> int:
        return 0 if self.keys is None else int(self.keys.numel())

    def read(self, keys: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Memory feature per key (zeros where absent; None while the memory is empty) and whether it was present."""
        if self.keys is None or self.keys.numel() == 0:
            return None, torch.zeros_like(keys, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
        hit = self.keys[pos] == keys
        return self.feats[pos] * hit[:, None], hit

    @torch.no_grad()
    def write(self, keys: torch.Tensor, feats: torch.Tensor) -> None:
        feats = feats.detach().float()
        ones = torch.ones_like(keys, dtype=feats.dtype)
        if self.keys is not None:
            keys = torch.cat([self.keys, keys])
            feats = torch.cat([self.feats * self.counts[:, None], feats])
            ones = torch.cat([self.counts, ones])
        uniq, inverse = torch.unique(keys, return_inverse=True)
        counts = ones.new_zeros(uniq.numel()).index_add_(0, inverse, ones)
        sums = feats.new_zeros(uniq.numel(), feats.shape[1]).index_add_(0, inverse, feats)
        self.keys, self.feats, self.counts = uniq, sums / counts[:, None], counts

    def fuse_frame(self, feats: torch.Tensor, points_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Read the memory at one frame's points, fuse, then write the frame. Returns (features, hit)."""
        keys = voxel_keys(points_world, self.voxel_size)
        past, hit = self.read(keys)
        out = feats
        if past is not None:
            delta = self.fuse(torch.cat([past.to(feats.dtype), feats], dim=-1)) * hit[:, None]
            out = F.normalize(feats + delta, dim=-1)
        self.write(keys, feats)
        return out, hit

    def forward(
        self, feats: torch.Tensor, points_world: torch.Tensor, point_frame: torch.Tensor, frame_window: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All frames of a batch in order; per sample from an empty memory unless ``persistent``.

        Returns the fused features and, per point, whether the memory held its voxel.
        """
        out = torch.empty_like(feats)
        hit = torch.zeros(feats.shape[0], dtype=torch.bool, device=feats.device)
        owners = frame_window.tolist()
        for f, owner in enumerate(owners):
            if not self.persistent and (f == 0 or owner != owners[f - 1]):
                self.reset()
            sel = (point_frame == f).nonzero().squeeze(1)
            out[sel], hit[sel] = self.fuse_frame(feats[sel], points_world[sel])
        if not self.persistent:
            self.reset()
        return out, hit
