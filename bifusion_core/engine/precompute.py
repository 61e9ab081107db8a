"""``precompute-clip`` for a preset: check the data root, then resolve the weights, then store features.

The order matters: without ``clip.weights`` the random ViT-B/16 (~600 MB) is written to the user
cache on first use, which must not happen for a data root that is about to be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config.schema import Preset
from ..features.clip_precompute import (
    VERIFY_TOLERANCE,
    PrecomputeSummary,
    check_prepared_images,
    precompute_clip_features,
    verify_clip_features,
)
from ..reporting import NULL_REPORTER, Reporter
from .builders import clip_weights_path, stored_clip_layers


@dataclass
class PrecomputeRun:
    summary: PrecomputeSummary
    verify_difference: float | None  # worst relative L2 difference of the re-encoded frames (None: not asked)
    verify_frames: int = 0
    verify_tolerance: float = VERIFY_TOLERANCE

    @property
    def verified(self) -> bool | None:
        """Whether the re-encoded frames match the stored ones (None: verify not asked)."""
        return None if self.verify_difference is None else self.verify_difference < self.verify_tolerance


def precompute_for_preset(
    cfg: Preset,
    *,
    workers: int = 1,
    batch_size: int = 8,
    device: str = "cpu",
    verify: int = 0,
    reporter: Reporter = NULL_REPORTER,
) -> PrecomputeRun:
    """Store the CLIP blocks the preset keeps frozen (``train.unfreeze.clip_blocks`` run online)."""
    root = Path(cfg.data.root)
    image_size = tuple(cfg.data.image_size)
    check_prepared_images(root, image_size)
    weights = clip_weights_path(cfg, reporter=reporter)
    common = dict(num_layers=stored_clip_layers(cfg), weights=weights, image_size=image_size, device=device)
    summary = precompute_clip_features(root, workers=workers, batch_size=batch_size, reporter=reporter, **common)
    difference = verify_clip_features(root, k=verify, **common) if verify else None
    return PrecomputeRun(summary, difference, verify)
