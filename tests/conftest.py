"""Shared fixtures: one small synthetic ScanNet set, written and prepared once per test session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from bifusion_core.cache import CACHE_ENV
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP
from bifusion_core.data.synthetic.write import write_synthetic_scannet
from synthetic_set import PREPARED_IMAGE_SIZE, PREPARED_NUM_POINTS, SYNTHETIC_OPTIONS, SYNTHETIC_SCENES, SYNTHETIC_SEED


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user cache (random CLIP weights, ...) of the whole session, CLI subprocesses included:
    a tmp folder, so tests never write to the home folder."""
    folder = tmp_path_factory.mktemp("bifusion-cache")
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


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
