"""Shared fixtures: one small synthetic ScanNet set, written and prepared once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from bifusion_core.data.prepare import prepare_scannet
from bifusion_core.data.synthetic import SYNTHETIC_FRAME_STEP, SyntheticOptions, write_synthetic_scannet

SYNTHETIC_SEED = 0
SYNTHETIC_SCENES = 3  # the last one is val
SYNTHETIC_OPTIONS = SyntheticOptions(num_frames=6)
PREPARED_IMAGE_SIZE = (224, 160)
PREPARED_NUM_POINTS = 2048


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with ``scans/`` (3 raw scenes: 2 train, 1 val, 6 frames each at raw indices
    0, 20, ..., 100), the label table, ``splits/`` and the prepared ``sv/`` (224x160, 2048 points).

    Shared by the whole session: treat it as read-only (copy what you need to modify).
    """
    root = tmp_path_factory.mktemp("synthetic-scannet")
    write_synthetic_scannet(root, SYNTHETIC_SCENES, seed=SYNTHETIC_SEED, options=SYNTHETIC_OPTIONS)
    prepare_scannet(
        root,
        root,
        frame_step=SYNTHETIC_FRAME_STEP,
        image_size=PREPARED_IMAGE_SIZE,
        num_points=PREPARED_NUM_POINTS,
    )
    return root
