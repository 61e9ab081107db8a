"""One prepared frame file -> the arrays training sees (labels mapped to a benchmark's train ids).

Shared by ``PreparedFrames`` (one frame per item) and ``PreparedSequences`` (T frames per item),
so single- and multi-view samples can never disagree about what a label means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import BifusionError
from ..labels import LabelSet

#: Arrays added by prepared-format version 2 (colour camera); older samples lack them.
COLOR_CAMERA_KEYS = ("valid", "color_intrinsic")
#: An array only format 2 has: its pixels went through an extrinsic that must not be applied.
FORMAT_2_KEY = "depth_to_color"


def load_prepared(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of one prepared ``.npz`` (read eagerly: the file is closed on return)."""
    path = Path(path)
    try:
        with np.load(path) as arrays:
            sample = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError, KeyError) as exc:
        raise BifusionError(path, f"unreadable sample ({exc})") from None
    if "points" in sample and (FORMAT_2_KEY in sample or not all(k in sample for k in COLOR_CAMERA_KEYS)):
        raise BifusionError(path, "sample was prepared by an older bifusion; run `bifusion prepare` again")
    return sample


def label_targets(sample: dict[str, np.ndarray], labels: LabelSet) -> dict[str, np.ndarray]:
    """Per point: ``semantic`` train id (-1 ignore), ``instance`` (0 = none or stuff), ``instance_class``
    (-1 none) and ``label_raw`` (the benchmark's raw id, 0 outside it), all int64."""
    raw = sample[labels.sample_key].astype(np.int64)
    semantic = labels.semantic_train_ids(raw)
    instance_class = labels.instance_class_ids(raw)
    instance = np.where(instance_class >= 0, sample["instance"], 0).astype(np.int64)
    return {
        "semantic": semantic,
        "instance": instance,
        "instance_class": np.where(instance > 0, instance_class, -1),
        "label_raw": np.where(semantic >= 0, raw, 0),
    }


def point_colors(sample: dict[str, np.ndarray]) -> np.ndarray:
    """RGB in [-0.5, 0.5] as float32, the 3D branch's input features."""
    return sample["colors"].astype(np.float32) / 255.0 - 0.5
