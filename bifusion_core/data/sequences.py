"""Prepared multi-view frames as a torch Dataset: T consecutive frames of a scene per item.

An item has the same keys as ``PreparedFrames`` (points concatenated over the T frames) so the
model and collate treat single- and multi-view alike; per-frame arrays carry a leading T axis and
``point_frame`` says which frame each point came from. The T frames share one augmentation (they
are one rigid scene), and superpoint ids are made unique across frames (a 2D superpoint belongs
to one frame). Training draws a random start with wrap-around; evaluation walks fixed windows
0..T-1, T..2T-1, ... (the last one may be shorter), so every frame is seen exactly once.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import BifusionError
from .dataset import build_item, item_rng
from .manifest import split_samples
from .labels import LabelSet


class PreparedSequences(Dataset):
    """Train: one item per scene (random window each time). Eval: one item per fixed window."""

    def __init__(
        self,
        root: str | Path,
        split: str | None,
        labels: LabelSet,
        voxel_size: float,
        augment: Any = None,
        clip_source: Any = None,
        num_frames: int = 8,
        *,
        random_windows: bool | None = None,
        mode: str = "mv",
    ):
        if num_frames < 1:
            raise BifusionError("num_frames", f"must be >= 1, got {num_frames}")
        self.root = Path(root) / mode
        self.manifest, records = split_samples(root, mode, split)
        by_scene: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            by_scene[record["scene"]].append(record)
        self.scenes = {scene: sorted(records, key=lambda r: r["frame"]) for scene, records in sorted(by_scene.items())}
        self.labels = labels
        self.voxel_size = voxel_size
        self.augment = augment
        self.clip_source = clip_source
        self.num_frames = int(num_frames)
        self.random_windows = augment is not None if random_windows is None else random_windows
        names = list(self.scenes)
        if self.random_windows:
            self.items = [(scene, None) for scene in names]
        else:
            self.items = [(scene, start) for scene in names for start in range(0, len(self.scenes[scene]), self.num_frames)]

    def __len__(self) -> int:
        return len(self.items)

    def window(self, index: int, rng: np.random.Generator | None = None) -> list[dict[str, Any]]:
        """The manifest records of item ``index``'s frames, in time order (wrapping past the last frame)."""
        scene, start = self.items[index]
        records = self.scenes[scene]
        count = min(self.num_frames, len(records))
        if start is None:
            start = int((rng or np.random.default_rng()).integers(len(records)))
            return [records[(start + k) % len(records)] for k in range(count)]
        return records[start:start + count]

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = item_rng(index)
        return build_item(self.root, self.window(index, rng), self.labels, self.voxel_size, self.augment, self.clip_source, rng)
