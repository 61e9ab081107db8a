"""Prepared multi-view frames as a torch Dataset: T consecutive frames of a scene per item.

An item has the same keys as ``PreparedFrames`` (points concatenated over the T frames) so the
model and collate treat single- and multi-view alike; per-frame arrays carry a leading T axis and
``point_frame`` says which frame each point came from. The T frames share one augmentation (they
are one rigid scene), and superpoint ids are made unique across frames (a 2D superpoint belongs
to one frame). Training draws a random start with wrap-around; evaluation walks fixed windows
0..T-1, T..2T-1, ... (the last one may be shorter), so every frame is seen exactly once.

With ``per_frame`` (``data.mv_decode: frame``, the default) an item is the list of its T frames,
each the very input streaming inference gives the model for that frame (its own points, centred
on themselves, voxelised alone), but sharing the window's augmentation; ``collate`` keeps the
frames of a window together so the model can still gather multi-view 2D features, run the
memory and pair frames in the merge loss. Training on whole windows while streaming one frame
at a time would teach the decoder scenes four times larger than the ones it is later shown.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ...errors import BifusionError
from ..labels import LabelSet
from ..prepare.manifest import split_samples
from .batch import voxelize
from .dataset import build_item, item_rng


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
        per_frame: bool = False,
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
        self.per_frame = per_frame
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
        return records[start : start + count]

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any] | list[dict[str, Any]]:
        index, rng = item_rng(index)
        item = build_item(self.root, self.window(index, rng), self.labels, self.voxel_size, self.augment, self.clip_source, rng)
        return split_window(item, self.voxel_size, augmented=self.augment is not None) if self.per_frame else item


#: per-point arrays of an item, cut per frame as they are
POINT_KEYS = ("points", "colors", "pixels", "valid", "semantic", "instance", "instance_class", "label_raw")
#: per-frame arrays of an item (leading T axis)
FRAME_KEYS = ("world_to_camera", "intrinsic", "depth", "color_intrinsic", "clip_patch", "clip_global")


def split_window(item: dict[str, Any], voxel_size: float, augmented: bool) -> list[dict[str, Any]]:
    """One window item → one item per frame, as ``build_item`` would make it from that frame alone.

    The 3D branch's coordinates are centred on the frame's own points (streaming centres each
    frame on itself; augmented ones keep the window's shared rigid map) and voxelised alone;
    superpoint ids restart at 0.
    """
    frames = []
    for t, key in enumerate(item["frame_keys"]):
        sel = item["point_frame"] == t
        points_aug = item["points_aug" if augmented else "points"][sel]
        points_aug = points_aug - points_aug.mean(axis=0)
        colors = item["colors"][sel]
        coords, inverse, voxel_feats = voxelize(points_aug, colors, voxel_size)
        superpoints = item["superpoints"][sel]
        frame = {k: item[k][sel] for k in POINT_KEYS}
        frame.update({k: item[k][t : t + 1] for k in FRAME_KEYS if k in item})
        frame.update(
            key=key,
            frame_keys=[key],
            points_aug=points_aug,
            voxel_coords=coords,
            voxel_inverse=inverse,
            voxel_feats=voxel_feats,
            superpoints=superpoints - superpoints.min(),
            point_frame=np.zeros(int(sel.sum()), np.int64),
        )
        frames.append(frame)
    return frames
