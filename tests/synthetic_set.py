"""The small synthetic ScanNet set the tests share (written and prepared once per session by
``conftest.synthetic_data``), and a writer of small prepared multi-view roots."""

from __future__ import annotations

from pathlib import Path

from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP, SyntheticOptions
from bifusion_core.data.synthetic.write import write_synthetic_scannet

SYNTHETIC_SEED = 0
SYNTHETIC_SCENES = 3  # the last one is val
SYNTHETIC_OPTIONS = SyntheticOptions(num_frames=6)
PREPARED_IMAGE_SIZE = (224, 160)
PREPARED_NUM_POINTS = 2048


def write_prepared_mv(root: Path, scenes: int, seed: int, image_size: tuple[int, int]) -> Path:
    """``scenes`` synthetic scans of 4 frames each, prepared as MV frame streams (1024 points) in ``root``."""
    write_synthetic_scannet(root, scenes, seed=seed, options=SyntheticOptions(num_frames=4))
    prepare_scannet(root, root, mode="mv", mv_frame_step=SYNTHETIC_FRAME_STEP, image_size=image_size, num_points=1024)
    return root
