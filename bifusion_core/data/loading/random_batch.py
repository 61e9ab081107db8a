"""A batch of random points with a preset's shapes, for checking a model without prepared data."""

from __future__ import annotations

import numpy as np
import torch

from ...ops import contiguous_ids
from .batch import Batch, collate, voxelize


def random_batch(cfg, labels, num_points: int = 600, seed: int = 0) -> Batch:
    """A random two-frame batch with the preset's shapes: exercises the model without any data
    (``bifusion validate``'s model check and the model tests)."""
    rng = np.random.default_rng(seed)
    w, h = cfg.data.image_size
    fx = fy = 0.9 * w
    intrinsic = np.array([[fx, 0, (w - 1) / 2], [0, fy, (h - 1) / 2], [0, 0, 1]], np.float32)
    samples = []
    for b in range(2):
        u, v = rng.uniform(0, w - 1, num_points), rng.uniform(0, h - 1, num_points)
        z = rng.uniform(1.0, 3.0, num_points)
        points = np.stack([(u - intrinsic[0, 2]) * z / fx, (v - intrinsic[1, 2]) * z / fy, z], 1).astype(np.float32)
        depth = np.zeros((h, w), np.float32)
        depth[np.round(v).astype(int), np.round(u).astype(int)] = z
        feats = rng.uniform(-0.5, 0.5, (num_points, cfg.model.backbone3d.in_channels)).astype(np.float32)
        coords, inverse, voxel_feats = voxelize(points, feats, cfg.data.voxel_size)
        thing = np.asarray(labels.thing_raw_ids[:3])
        instance = rng.integers(0, 4, num_points)
        raw = np.where(instance > 0, thing[instance % 3], labels.raw_ids[0])
        samples.append(
            {
                "key": f"tiny/{b:06d}",
                "points": points,
                "points_aug": points - points.mean(0),
                "voxel_coords": coords,
                "voxel_inverse": inverse,
                "voxel_feats": voxel_feats,
                "superpoints": contiguous_ids(rng.integers(0, 20, num_points)).astype(np.int64),
                "semantic": labels.semantic_train_ids(raw),
                "instance": instance,
                "instance_class": np.where(instance > 0, labels.instance_class_ids(raw), -1),
                "label_raw": raw,
                "point_frame": np.zeros(num_points, np.int64),
                "pixels": np.stack([u, v], 1).astype(np.float32),
                "valid": np.arange(num_points) % 10 != 0,  # some points unseen: the no-view path runs
                "world_to_camera": np.eye(4)[None],
                "intrinsic": intrinsic[None],
                "depth": depth[None],
                "color_intrinsic": intrinsic[None],
            }
        )
        if cfg.model.use_2d:
            samples[-1]["clip_patch"] = torch.randn(1, 768, h // 16, w // 16)
            samples[-1]["clip_global"] = torch.randn(1, 768)
    return collate(samples)
