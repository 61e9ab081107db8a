"""The CLIP store's fast read path: version-2 shards with a frame index, read with one preadv per
frame, against what h5py reads from the same files; older and compressed shards still read."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from bifusion_core.errors import BifusionError
from bifusion_core.features.clip_store import (
    INDEX_KEYS,
    INDEX_OFFSETS,
    SHARD_VERSION,
    ClipFeatureStore,
    ShardSettings,
    ShardWriter,
)

SHAPE = (768, 3, 4)


def _features(n: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        f"scene{i // 3:04d}_00/{i % 3 * 20:06d}": (
            rng.standard_normal(SHAPE).astype(np.float16),
            rng.standard_normal(768).astype(np.float16),
        )
        for i in range(n)
    }


def _write(directory: Path, frames: dict, compression: str | None = None, per_shard: int = 4) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    settings = ShardSettings(num_layers=1, image_size=(64, 48), digest="test", compression=compression)
    with ShardWriter(directory, "run-w00", settings, per_shard) as writer:
        for key, (patch, global_token) in frames.items():
            writer.add(key, patch, global_token)
    return writer.published


def _h5py_read(directory: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    for shard in sorted(directory.glob("shard-*.h5")):
        with h5py.File(shard, "r") as fh:
            if key in fh:
                return fh[key]["patch"][()], fh[key]["global"][()]
    raise KeyError(key)


def test_v2_shards_hold_an_index_and_raw_reads_equal_h5py(tmp_path: Path) -> None:
    frames = _features(10)
    published = _write(tmp_path, frames)
    assert len(published) == 3  # 4 + 4 + 2 frames
    with h5py.File(tmp_path / published[0], "r") as fh:
        assert fh.attrs["version"] == SHARD_VERSION == 2
        assert [k.decode() for k in fh[INDEX_KEYS][()]] == list(frames)[:4]
        assert fh[INDEX_OFFSETS].shape == (4, 2)
    with ClipFeatureStore(tmp_path) as store:
        assert sorted(store.keys()) == sorted(frames)
        assert len(store._extents) == 10  # every frame takes the raw path
        for key, (patch, global_token) in frames.items():
            got_patch, got_global = store.get(key)
            ref_patch, ref_global = _h5py_read(tmp_path, key)
            assert got_patch.dtype == np.float16 and got_patch.shape == SHAPE and got_patch.flags.writeable
            np.testing.assert_array_equal(got_patch, ref_patch)
            np.testing.assert_array_equal(got_global, ref_global)
            np.testing.assert_array_equal(got_patch, patch)
            np.testing.assert_array_equal(got_global, global_token)
        assert store.get("scene9999_00/000000") is None


def test_version1_shards_without_index_are_walked(tmp_path: Path) -> None:
    frames = _features(5)
    for name in _write(tmp_path, frames, per_shard=8):
        with h5py.File(tmp_path / name, "a") as fh:  # what a version-1 writer left
            del fh[INDEX_KEYS], fh[INDEX_OFFSETS]
            fh.attrs["version"] = 1
    with ClipFeatureStore(tmp_path) as store:
        assert sorted(store.keys()) == sorted(frames)
        for key, (patch, global_token) in frames.items():
            got_patch, got_global = store.get(key)
            np.testing.assert_array_equal(got_patch, patch)
            np.testing.assert_array_equal(got_global, global_token)


def test_compressed_shards_fall_back_to_h5py(tmp_path: Path) -> None:
    frames = _features(4)
    (name,) = _write(tmp_path, frames, compression="lzf")
    with h5py.File(tmp_path / name, "r") as fh:
        assert INDEX_KEYS not in fh  # chunked patches have no raw extent: no index
    with ClipFeatureStore(tmp_path) as store:
        for key, (patch, global_token) in frames.items():
            got_patch, got_global = store.get(key)
            np.testing.assert_array_equal(got_patch, patch)
            np.testing.assert_array_equal(got_global, global_token)
        assert set(store._extents) == set()  # patch is chunked, so no frame has a raw extent


def test_pickled_store_reads_in_a_fresh_process_state(tmp_path: Path) -> None:
    frames = _features(6)
    _write(tmp_path, frames)
    store = ClipFeatureStore(tmp_path)
    first = next(iter(frames))
    store.get(first)  # opens a descriptor; it must not travel with the pickle
    clone = pickle.loads(pickle.dumps(store))
    assert clone._fds == {} and clone.index == store.index
    for key, (patch, _) in frames.items():
        np.testing.assert_array_equal(clone.get(key)[0], patch)
    clone.close()
    store.close()
    assert store._fds == {}


def test_truncated_shard_is_one_line_error(tmp_path: Path) -> None:
    frames = _features(4)
    (name,) = _write(tmp_path, frames)
    store = ClipFeatureStore(tmp_path)
    store.keys()  # the index is a snapshot: the shard is cut after it was taken
    last = max(frames, key=lambda k: store._extents[k][0].offset)
    size = os.path.getsize(tmp_path / name)
    os.truncate(tmp_path / name, store._extents[last][0].offset + 10)
    with pytest.raises(BifusionError, match="shorter than its index"):
        store.get(last)
    assert size > os.path.getsize(tmp_path / name)
    store.close()
