"""Prepared single-view frames as a torch Dataset: load, map labels, augment, voxelise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config.schema import AugmentConfig
from ..errors import BifusionError
from ..io import read_json
from .batch import voxelize
from .labels import LabelSet

MANIFEST_FORMAT = "bifusion-prepared"


def manifest_path(root: str | Path, mode: str = "sv") -> Path:
    return Path(root) / mode / "manifest.json"


def load_manifest(root: str | Path, mode: str = "sv") -> dict[str, Any]:
    path = manifest_path(root, mode)
    if not path.is_file():
        raise BifusionError(path, "no prepared data here; run `bifusion prepare` first")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise BifusionError(path, f"not a bifusion manifest (expected format '{MANIFEST_FORMAT}')")
    return manifest


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
        self.manifest = load_manifest(root, mode)
        self.records = [r for r in self.manifest["samples"] if split is None or r["split"] == split]
        if limit is not None:
            self.records = self.records[:limit]
        if not self.records:
            raise BifusionError(manifest_path(root, mode), f"no samples in split '{split}'")
        self.labels = labels
        self.voxel_size = voxel_size
        self.augment = augment
        self.clip_source = clip_source

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        path = self.root / record["file"]
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise BifusionError(path, f"unreadable sample ({exc})") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        z = self._load(record)
        raw = z[self.labels.sample_key].astype(np.int64)
        semantic = self.labels.semantic_train_ids(raw)
        instance_class = self.labels.instance_class_ids(raw)
        instance = np.where(instance_class >= 0, z["instance"], 0).astype(np.int64)
        instance_class = np.where(instance > 0, instance_class, -1)
        points = z["points"].astype(np.float32)
        colors = z["colors"].astype(np.float32) / 255.0 - 0.5
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            points_aug = augment_points(points, self.augment, rng)
            if self.augment.color_jitter > 0:
                colors = colors + rng.normal(0, self.augment.color_jitter, (1, 3)).astype(np.float32)
        else:
            points_aug = points - points.mean(axis=0)
        coords, inverse = voxelize(points_aug, self.voxel_size)
        sample = {
            "key": record["key"],
            "points": points,
            "points_aug": points_aug,
            "point_feats": colors.astype(np.float32),
            "voxel_coords": coords,
            "voxel_inverse": inverse,
            # sampling may have dropped whole superpoints: make the ids contiguous again
            "superpoints": np.unique(z["superpoints"], return_inverse=True)[1].reshape(-1).astype(np.int64),
            "semantic": semantic,
            "instance": instance,
            "instance_class": instance_class,
            "label_raw": np.where(semantic >= 0, raw, 0),
            # per-frame arrays carry a leading frame axis (T = 1 here, T > 1 for multi-view)
            "point_frame": np.zeros(len(points), np.int64),
            "pose": z["pose"].astype(np.float32)[None],
            "intrinsic": z["intrinsic"].astype(np.float32)[None],
            "depth": (z["depth_mm"].astype(np.float32) / 1000.0)[None],
        }
        if self.clip_source is not None:
            patch, global_vec = self.clip_source.get(record["key"], self.root / record["image"])
            sample["clip_patch"] = torch.as_tensor(patch).float()[None]
            sample["clip_global"] = torch.as_tensor(global_vec).float()[None]
        return sample
