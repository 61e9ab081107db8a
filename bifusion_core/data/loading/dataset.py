"""Prepared single-view frames as a torch Dataset: load, map labels, augment, voxelise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...config.schema import AugmentConfig
from ...ops import invert_pose
from ..labels import LabelSet
from ..prepare.manifest import MM_PER_M, split_samples
from .batch import voxelize
from .targets import label_targets, load_prepared, point_colors


def augment_points(points: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Rigid + scale augmentation around the frame centre (only the 3D branch sees it)."""
    out = points - points.mean(axis=0)
    if cfg.rotate_z:
        theta = rng.uniform(-np.pi, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        out = out @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32).T
    if cfg.flip_xy:
        out[:, :2] *= np.where(rng.random(2) < 0.5, -1.0, 1.0)
    out *= rng.uniform(*cfg.scale)
    if cfg.jitter_std > 0:
        out += rng.normal(0, cfg.jitter_std, out.shape)
    return out.astype(np.float32)


def item_rng(index: Any) -> tuple[int, np.random.Generator]:
    """Items are addressed by ``index`` or ``(index, seed)``: the training sampler passes a seed derived
    from (run seed, epoch, index), so augmentation replays identically in any worker after a resume."""
    if isinstance(index, (tuple, list)):
        return int(index[0]), np.random.default_rng(int(index[1]))
    return int(index), np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))


def build_item(
    root: Path,
    records: list[dict[str, Any]],
    labels: LabelSet,
    voxel_size: float,
    augment: AugmentConfig | None,
    clip_source: Any,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """T ≥ 1 prepared frames (manifest records under ``root``) → one model input (``sample_item``)."""
    first = records[0]
    key = first["key"] if len(records) == 1 else f"{first['scene']}/{first['frame']:06d}+{len(records)}"
    frames = [load_prepared(root / r["file"]) for r in records]
    images = [root / r["image"] for r in records]
    return sample_item(frames, [r["key"] for r in records], images, key, labels, voxel_size, augment, clip_source, rng)


def sample_item(
    frames: list[dict[str, np.ndarray]],
    frame_keys: list[str],
    images: list[Any],
    key: str,
    labels: LabelSet,
    voxel_size: float,
    augment: AugmentConfig | None,
    clip_source: Any,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """T ≥ 1 samples (prepared files, or raw frames streamed by ``bifusion infer --frames``) → one
    model input: points concatenated, per-frame arrays stacked. ``images``: each frame's prepared
    image (file or array) for its CLIP tokens.

    The frames share one augmentation (they are one rigid scene) and superpoint ids are made
    unique across frames (a 2D superpoint belongs to one frame; each frame's ids are already
    contiguous, prepare made them so). Everything derived per sample is derived here, once:
    voxels and their mean features, depth in metres, each camera's world-to-camera matrix.
    """
    rng = rng if rng is not None else np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
    targets = [label_targets(sample, labels) for sample in frames]
    points = np.concatenate([sample["points"] for sample in frames]).astype(np.float32)
    colors = np.concatenate([point_colors(sample) for sample in frames])
    if augment is not None:
        points_aug = augment_points(points, augment, rng)
        if augment.color_jitter > 0:
            colors = colors + rng.normal(0, augment.color_jitter, (1, 3)).astype(np.float32)
    else:
        points_aug = points - points.mean(axis=0)
    coords, inverse, voxel_feats = voxelize(points_aug, colors.astype(np.float32), voxel_size)
    superpoints, offset = [], 0
    for sample in frames:
        superpoints.append(sample["superpoints"].astype(np.int64) + offset)
        offset += int(sample["superpoints"].max()) + 1
    world_to_camera = invert_pose(np.stack([sample["pose"] for sample in frames]))
    item = {
        "key": key,
        "frame_keys": list(frame_keys),
        "points": points,
        "points_aug": points_aug,
        "colors": colors.astype(np.float32),
        "voxel_coords": coords,
        "voxel_inverse": inverse,
        "voxel_feats": voxel_feats,
        "superpoints": np.concatenate(superpoints),
        "point_frame": np.concatenate([np.full(len(sample["points"]), t, np.int64) for t, sample in enumerate(frames)]),
        "pixels": np.concatenate([sample["pixels"] for sample in frames]).astype(np.float32),
        "valid": np.concatenate([sample["valid"] for sample in frames]).astype(bool),
        **{k: np.concatenate([t[k] for t in targets]) for k in ("semantic", "instance", "instance_class", "label_raw")},
        "world_to_camera": world_to_camera,
        "intrinsic": np.stack([sample["intrinsic"] for sample in frames]).astype(np.float32),
        "depth": np.stack([sample["depth_mm"] for sample in frames]).astype(np.float32) / MM_PER_M,
        "color_intrinsic": np.stack([sample["color_intrinsic"] for sample in frames]).astype(np.float32),
    }
    if clip_source is not None:
        features = [clip_source.get(frame_key, image) for frame_key, image in zip(frame_keys, images)]
        item["clip_patch"] = torch.stack([torch.as_tensor(p).float() for p, _ in features])
        item["clip_global"] = torch.stack([torch.as_tensor(g).float() for _, g in features])
    return item


class PreparedFrames(Dataset):
    """One item per prepared frame of a split; CLIP tokens come from ``clip_source`` when given."""

    def __init__(
        self,
        root: str | Path,
        split: str | None,
        labels: LabelSet,
        voxel_size: float,
        augment: AugmentConfig | None = None,
        clip_source: Any = None,
        mode: str = "sv",
        limit: int | None = None,
    ):
        self.root = Path(root) / mode
        self.manifest, self.records = split_samples(root, mode, split)
        if limit is not None:
            self.records = self.records[:limit]
        self.labels = labels
        self.voxel_size = voxel_size
        self.augment = augment
        self.clip_source = clip_source

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = item_rng(index)
        return build_item(self.root, [self.records[index]], self.labels, self.voxel_size, self.augment, self.clip_source, rng)
