"""A training/eval batch: samples concatenated point-wise, voxelised for the sparse U-Net.

Everything the model needs is a tensor here, so moving a batch to the device is one call
and the model never touches numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch


def voxelize(points: np.ndarray, feats: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique voxel coordinates, per point the index of its voxel, and per voxel the mean of its
    points' features (float32): everything the sparse U-Net's input needs, made once per sample."""
    grid = np.floor(points / voxel_size).astype(np.int32)
    grid -= grid.min(axis=0)
    coords, inverse = np.unique(grid, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    voxel_feats = np.zeros((len(coords), feats.shape[1]), np.float32)
    np.add.at(voxel_feats, inverse, feats)
    voxel_feats /= np.bincount(inverse, minlength=len(coords))[:, None]
    return coords, inverse, voxel_feats


@dataclass
class Batch:
    keys: list[str]
    # points (N = all points of the batch)
    points: torch.Tensor  # (N,3) world frame: projection into the frame uses these
    points_aug: torch.Tensor  # (N,3) augmented copy the 3D branch sees
    point_batch: torch.Tensor  # (N,) sample index
    point_voxel: torch.Tensor  # (N,) row in vox_coords
    superpoints: torch.Tensor  # (N,) global superpoint index
    sp_batch: torch.Tensor  # (S,) sample index of each superpoint
    semantic: torch.Tensor  # (N,) train id, -1 ignore
    instance: torch.Tensor  # (N,) thing instance id, 0 none (stuff counts as none)
    instance_class: torch.Tensor  # (N,) thing class id, -1 none
    label_raw: torch.Tensor  # (N,) raw benchmark label id (for evaluation)
    pixels: torch.Tensor  # (N,2) float: the point's pixel in its own frame's colour image (prepared size)
    valid: torch.Tensor  # (N,) bool: the point lies inside its own frame's colour image
    # voxels
    vox_coords: torch.Tensor  # (M,4) int: batch index + xyz
    vox_feats: torch.Tensor  # (M,C) mean point features per voxel
    # frames (F = all frames of the batch: one per sample single-view, T per sample multi-view)
    point_frame: torch.Tensor  # (N,) global frame index of each point
    frame_batch: torch.Tensor  # (F,) sample index of each frame
    world_to_camera: (
        torch.Tensor
    )  # (F,4,4) float64: inv(pose), world-to-camera of both the depth and the colour image (registered)
    intrinsic: torch.Tensor  # (F,3,3) depth camera, prepared size
    depth: torch.Tensor  # (F,H,W) metres, depth camera
    color_intrinsic: torch.Tensor  # (F,3,3) colour camera, prepared size (the CLIP image)
    clip_patch: torch.Tensor | None = None  # (F,768,h,w)
    clip_global: torch.Tensor | None = None  # (F,768)
    sp_counts: tuple[int, ...] = ()  # superpoints per sample, on the host: the model splits per sample without reading sp_batch
    # multi-view decoded per frame: the window each sample (frame) belongs to, on the host; () = each sample is its own window
    sample_window: tuple[int, ...] = ()

    @property
    def num_samples(self) -> int:
        return len(self.keys)

    @property
    def num_frames(self) -> int:
        return int(self.frame_batch.shape[0])

    @property
    def window_of_sample(self) -> tuple[int, ...]:
        """Each sample's window (host ints): a window groups the frames that lend each other 2D
        features, memory and merge pairs; without windows each sample is its own."""
        return self.sample_window or tuple(range(self.num_samples))

    @property
    def num_windows(self) -> int:
        return self.window_of_sample[-1] + 1  # windows are numbered in sample order

    @property
    def frame_window(self) -> torch.Tensor:
        """(F,) window of each frame; a window's frames are contiguous and in time order."""
        if not self.sample_window:
            return self.frame_batch
        return torch.tensor(self.sample_window, device=self.frame_batch.device)[self.frame_batch]

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.depth.shape[2]), int(self.depth.shape[1])

    def to(self, device: torch.device | str) -> "Batch":
        moved = {
            f.name: (
                getattr(self, f.name).to(device, non_blocking=True)
                if torch.is_tensor(getattr(self, f.name))
                else getattr(self, f.name)
            )
            for f in fields(self)
        }
        return Batch(**moved)


def collate(items: list[dict[str, Any] | list[dict[str, Any]]]) -> Batch:
    """Samples (``PreparedFrames`` / multi-view sequences) → one ``Batch`` with globally offset indices.

    An item that is a list (a window decoded per frame) adds each of its frames as a sample and
    records which window they came from (``Batch.sample_window``).
    """
    windowed = any(isinstance(item, list) for item in items)
    groups = [item if isinstance(item, list) else [item] for item in items]
    samples = [s for group in groups for s in group]
    sample_window = tuple(w for w, group in enumerate(groups) for _ in group)
    vox_coords, point_voxel, superpoints, sp_batch, point_batch = [], [], [], [], []
    point_frame, frame_batch = [], []
    vox_offset = sp_offset = frame_offset = 0
    for b, s in enumerate(samples):
        coords = s["voxel_coords"]
        vox_coords.append(np.concatenate([np.full((len(coords), 1), b, np.int32), coords], axis=1))
        point_voxel.append(s["voxel_inverse"] + vox_offset)
        num_sp = int(s["superpoints"].max()) + 1
        superpoints.append(s["superpoints"] + sp_offset)
        sp_batch.append(np.full(num_sp, b))
        point_batch.append(np.full(len(s["points"]), b))
        num_frames = len(s["world_to_camera"])
        point_frame.append(s["point_frame"] + frame_offset)
        frame_batch.append(np.full(num_frames, b))
        vox_offset += len(coords)
        sp_offset += num_sp
        frame_offset += num_frames

    def cat(key: str, dtype=None) -> torch.Tensor:
        t = torch.from_numpy(np.concatenate([s[key] for s in samples]))
        return t if dtype is None else t.to(dtype)

    def frames(key: str, dtype=torch.float32) -> torch.Tensor:
        return torch.cat([torch.as_tensor(s[key]) for s in samples]).to(dtype)

    has_clip = all(s.get("clip_patch") is not None for s in samples)
    return Batch(
        keys=[s["key"] for s in samples],
        points=cat("points", torch.float32),
        points_aug=cat("points_aug", torch.float32),
        point_batch=torch.from_numpy(np.concatenate(point_batch)).long(),
        point_voxel=torch.from_numpy(np.concatenate(point_voxel)).long(),
        superpoints=torch.from_numpy(np.concatenate(superpoints)).long(),
        sp_batch=torch.from_numpy(np.concatenate(sp_batch)).long(),
        sp_counts=tuple(len(b) for b in sp_batch),
        sample_window=sample_window if windowed else (),
        semantic=cat("semantic", torch.long),
        instance=cat("instance", torch.long),
        instance_class=cat("instance_class", torch.long),
        label_raw=cat("label_raw", torch.long),
        pixels=cat("pixels", torch.float32),
        valid=cat("valid", torch.bool),
        vox_coords=torch.from_numpy(np.concatenate(vox_coords)).int(),
        vox_feats=cat("voxel_feats", torch.float32),
        point_frame=torch.from_numpy(np.concatenate(point_frame)).long(),
        frame_batch=torch.from_numpy(np.concatenate(frame_batch)).long(),
        world_to_camera=frames("world_to_camera", torch.float64),
        intrinsic=frames("intrinsic"),
        depth=frames("depth"),
        color_intrinsic=frames("color_intrinsic"),
        clip_patch=frames("clip_patch") if has_clip else None,
        clip_global=frames("clip_global") if has_clip else None,
    )
