"""CLIP encoder and offline feature shards, with real open_clip code and real HDF5 files.

No pretrained weights can be downloaded, so a random ViT-B-16 is saved in open_clip's checkpoint
layout and loaded through the same path as real weights. Frames are tiny (224 x 160) and the
encoder is cut after <= 2 blocks to keep the whole file fast on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from bifusion_core.data.prepare.manifest import MANIFEST_VERSION
from bifusion_core.errors import BifusionError
from bifusion_core.features.clip_encoder import (
    CLIP_MEAN,
    CLIP_STD,
    load_clip_encoder,
    preprocess_images,
    save_random_clip_weights,
)
from bifusion_core.features.clip_precompute import PRECOMPUTE_TASK, precompute_clip_features, verify_clip_features
from bifusion_core.features.clip_source import ClipFeatureSource
from bifusion_core.features.clip_store import ClipFeatureStore, feature_tag
from bifusion_core.reporting import RecordingReporter

W, H = 224, 160  # a non-square frame: 14 x 10 patches


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_clip_weights(tmp_path_factory.mktemp("weights") / "open_clip_pytorch_model.bin", seed=0)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return preprocess_images(rng.integers(0, 256, size=(2, H, W, 3), dtype=np.uint8))


def _write_frame(root: Path, scene: str, frame: int, rng: np.random.Generator) -> dict:
    image = f"images/{scene}/{frame:06d}.jpg"
    path = root / "sv" / image
    path.parent.mkdir(parents=True, exist_ok=True)
    # Smooth random colours + noise: JPEG-friendly, yet every frame differs.
    base = rng.integers(0, 256, size=(H // 16, W // 16, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    noise = rng.integers(-20, 21, size=(H, W, 3))
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=92)
    return {
        "key": f"{scene}/{frame:06d}",
        "scene": scene,
        "frame": frame,
        "split": "train" if scene.endswith("0_00") else "val",
        "file": f"samples/{scene}/{frame:06d}.npz",
        "image": image,
    }


def _write_manifest(root: Path, samples: list[dict]) -> None:
    manifest = {
        "format": "bifusion-prepared",
        "version": MANIFEST_VERSION,
        "mode": "sv",
        "image_size": [W, H],
        "num_points": 1024,
        "frame_step": 200,
        "superpoints": "image",
        "source": str(root / "raw"),
        "samples": samples,
        "skipped": [],
    }
    (root / "sv").mkdir(parents=True, exist_ok=True)
    (root / "sv" / "manifest.json").write_text(json.dumps(manifest))


def _shard_state(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


# ----------------------------------------------------------------------------- encoder


def test_saved_random_weights_reproduce_identical_outputs(clip_weights: Path, frames: torch.Tensor) -> None:
    # Laid out like open_clip_pytorch_model.bin: a flat CLIP state dict with both towers.
    state = torch.load(clip_weights, map_location="cpu", weights_only=True)
    assert state["visual.conv1.weight"].shape == (768, 3, 16, 16)
    assert "token_embedding.weight" in state and "logit_scale" in state

    from_file, digest = load_clip_encoder(2, clip_weights)
    in_memory, random_digest = load_clip_encoder(2, None)
    assert digest == hashlib.sha256(clip_weights.read_bytes()).hexdigest()[:12]
    assert random_digest == "random-0"
    with torch.inference_mode():
        a, b = from_file(frames), in_memory(frames)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    # Frozen, eval, and only the kept part of the image tower is held.
    assert not from_file.training
    assert not any(p.requires_grad for p in from_file.parameters())
    assert sum(p.numel() for p in from_file.parameters()) < 20_000_000


def test_nested_and_prefixed_state_dicts_load(clip_weights: Path, tmp_path: Path, frames: torch.Tensor) -> None:
    state = torch.load(clip_weights, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    reference, _ = load_clip_encoder(1, clip_weights)
    encoder, digest = load_clip_encoder(1, wrapped)
    assert digest == hashlib.sha256(wrapped.read_bytes()).hexdigest()[:12]
    with torch.inference_mode():
        assert torch.equal(encoder(frames)[0], reference(frames)[0])


def test_truncation_matches_open_clip_and_resizes_positions(clip_weights: Path, frames: torch.Tensor) -> None:
    import open_clip

    encoders = {n: load_clip_encoder(n, clip_weights)[0] for n in (0, 1, 2)}
    with torch.inference_mode():
        for n, encoder in encoders.items():
            patch, global_token = encoder(frames)
            assert patch.shape == (2, 768, H // 16, W // 16), n
            assert global_token.shape == (2, 768), n
            assert len(encoder.blocks) == n

        # Layer 0 is the patch embedding plus the bicubically resized positional embedding.
        patch0, global0 = encoders[0](frames)
        pos = encoders[0].resized_positional_embedding(H // 16, W // 16)
        conv = encoders[0].conv1(frames)
        assert torch.allclose(patch0, conv + pos[1:].T.reshape(1, 768, H // 16, W // 16), atol=1e-5)
        assert torch.allclose(global0[0], encoders[0].class_embedding + pos[0], atol=1e-6)

        # At CLIP's own 224 x 224 the truncated tower must equal open_clip's block outputs,
        # with the checkpoint loaded by open_clip itself (proves the file layout is the real one).
        reference = open_clip.create_model("ViT-B-16", pretrained=str(clip_weights)).visual.eval()
        square = frames.new_tensor(np.random.default_rng(1).standard_normal((1, 3, 224, 224)))
        expected = reference.forward_intermediates(
            square, indices=[1], stop_early=True, intermediates_only=True, output_extra_tokens=True
        )
        patch2, global2 = encoders[2](square)
        assert torch.allclose(patch2, expected["image_intermediates"][0], atol=1e-4)
        assert torch.allclose(global2, expected["image_intermediates_prefix"][0][:, 0], atol=1e-4)

    with pytest.raises(BifusionError, match="multiples of 16"):
        encoders[1](torch.zeros(1, 3, 160, 220))


def test_encoder_stays_frozen_in_train_mode(clip_weights: Path) -> None:
    encoder, _ = load_clip_encoder(2, clip_weights)
    encoder.train()
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not any(m.training for m in encoder.modules())


@pytest.mark.parametrize("content", ["garbage", "foreign", "missing"])
def test_bad_weights_file_is_one_line_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / f"{content}.bin"
    if content == "garbage":
        path.write_bytes(b"\x00not a checkpoint\n" * 100)
    elif content == "foreign":
        torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(BifusionError) as info:
        load_clip_encoder(1, path)
    assert info.value.where == str(path)
    assert "\n" not in str(info.value)


def test_preprocess_images_normalises_with_clip_statistics() -> None:
    images = np.zeros((2, 32, 48, 3), dtype=np.uint8)
    images[1] = 255
    x = preprocess_images(images)
    assert x.shape == (2, 3, 32, 48) and x.dtype == torch.float32
    for c in range(3):
        assert torch.allclose(x[0, c], torch.tensor(-CLIP_MEAN[c] / CLIP_STD[c]))
        assert torch.allclose(x[1, c], torch.tensor((1 - CLIP_MEAN[c]) / CLIP_STD[c]))
    assert torch.equal(preprocess_images(torch.from_numpy(images[0])), x[:1])


# ----------------------------------------------------------------------------- shards


class _SourceDataset(torch.utils.data.Dataset):
    def __init__(self, source: ClipFeatureSource, items: list[tuple[str, str]]):
        self.source, self.items = source, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.source.get(*self.items[i])[1]


@pytest.mark.slow
def test_shards_write_skip_verify_and_fallback(clip_weights: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "DATA"
    samples = [_write_frame(root, "scene0000_00", f, rng) for f in (0, 200, 400)]
    samples += [_write_frame(root, "scene0001_00", 0, rng)]
    extra = [_write_frame(root, "scene0001_00", f, rng) for f in (200, 400)]
    not_in_manifest = _write_frame(root, "scene0002_00", 0, rng)
    _write_manifest(root, samples)
    settings = dict(num_layers=1, weights=clip_weights, image_size=(W, H))
    tag = feature_tag(1, (W, H), hashlib.sha256(clip_weights.read_bytes()).hexdigest()[:12])
    out_dir = root / "clip" / tag

    # Leftovers of a killed run must be ignored, not read as shards.
    out_dir.mkdir(parents=True)
    (out_dir / "shard-killed-w00-0000.h5.tmp").write_bytes(b"half a shard")
    (out_dir / ".shard-killed-w01-0000.h5.x1y2.tmp").write_bytes(b"")

    # Two worker processes, two frames each.
    reporter = RecordingReporter()
    first = precompute_clip_features(root, workers=2, batch_size=2, reporter=reporter, **settings)
    assert (first.tag, first.dir, first.computed, first.skipped, first.total) == (tag, out_dir, 4, 0, 4)
    assert not first.random_init
    assert reporter.totals[PRECOMPUTE_TASK] == 4 and reporter.done[PRECOMPUTE_TASK] == 4
    assert len(list(out_dir.glob("shard-*.h5"))) == 2

    # Incremental: only the two new manifest frames are computed, in this process.
    _write_manifest(root, samples + extra)
    second = precompute_clip_features(root, workers=1, **settings)
    assert (second.computed, second.skipped, second.total) == (2, 4, 6)

    # Nothing left: nothing recomputed, no file touched.
    before = _shard_state(out_dir)
    third = precompute_clip_features(root, workers=2, reporter=RecordingReporter(), **settings)
    assert (third.computed, third.skipped) == (0, 6)
    assert _shard_state(out_dir) == before

    store = ClipFeatureStore(out_dir)
    keys = sorted(s["key"] for s in samples + extra)
    assert sorted(store.keys()) == keys
    patch, global_token = store.get(keys[0])
    assert patch.dtype == np.float16 and patch.shape == (768, H // 16, W // 16)
    assert global_token.dtype == np.float16 and global_token.shape == (768,)
    assert store.get("scene0002_00/000000") is None and "scene0002_00/000000" not in store
    revived = pickle.loads(pickle.dumps(store))
    assert np.array_equal(revived.get(keys[-1])[0], store.get(keys[-1])[0])

    # fp16 storage keeps stored vs recomputed well under the 1e-3 relative L2 requirement.
    error = verify_clip_features(root, k=6, **settings)
    assert error < 1e-3

    # Training side: stored frames come from the shards, a missing one is computed and counted.
    source = ClipFeatureSource.for_data_root(root, **settings)
    stored_patch, _ = source.get(keys[0], root / "sv" / samples[0]["image"])
    assert torch.equal(stored_patch, torch.from_numpy(patch).float()) and source.fallbacks == 0
    online_patch, online_global = source.get("scene0002_00/000000", root / "sv" / not_in_manifest["image"])
    assert source.fallbacks == 1 and online_patch.shape == (768, H // 16, W // 16)
    same_frame_online, _ = source.get("unstored/key", root / "sv" / samples[0]["image"])
    assert (same_frame_online - stored_patch).norm() / stored_patch.norm() < 1e-3
    assert source.fallbacks == 2

    # DataLoader workers share the store and report their fallbacks to the parent's count.
    items = [(s["key"], str(root / "sv" / s["image"])) for s in samples]
    items.append(("scene0002_00/000000", str(root / "sv" / not_in_manifest["image"])))
    loader = torch.utils.data.DataLoader(_SourceDataset(source, items), batch_size=2, num_workers=2)
    assert sum(batch.shape[0] for batch in loader) == len(items)
    assert source.fallbacks == 3

    # Tampered features are caught by verify.
    shard = store.index[keys[0]]
    for reader in (store, revived, source):
        reader.close()
    with h5py.File(out_dir / shard, "r+") as fh:
        fh[keys[0]]["patch"][...] = fh[keys[0]]["patch"][()] * np.float16(1.01)
    assert verify_clip_features(root, k=6, **settings) > 1e-3


def test_manifest_with_other_image_size_is_rejected(tmp_path: Path, clip_weights: Path) -> None:
    root = tmp_path / "DATA"
    _write_manifest(root, [_write_frame(root, "scene0000_00", 0, np.random.default_rng(0))])
    with pytest.raises(BifusionError, match="prepared at 224x160"):
        precompute_clip_features(root, num_layers=1, weights=clip_weights, image_size=(320, 240))
    with pytest.raises(BifusionError, match="multiples of 16"):
        precompute_clip_features(root, num_layers=1, weights=clip_weights, image_size=(230, 160))


@pytest.mark.slow
def test_failing_worker_keeps_published_shards_and_rerun_resumes(clip_weights: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "DATA"
    samples = [_write_frame(root, "scene0000_00", f, rng) for f in (0, 200, 400, 600)]
    _write_manifest(root, samples)
    missing = root / "sv" / samples[3]["image"]
    kept = missing.read_bytes()
    missing.unlink()
    settings = dict(num_layers=0, weights=clip_weights, image_size=(W, H))

    # Worker 0 gets frames 0-1, worker 1 frames 2-3; one frame per shard; frame 3 fails.
    with pytest.raises(BifusionError) as info:
        precompute_clip_features(root, workers=2, batch_size=1, frames_per_shard=1, **settings)
    assert info.value.where == str(missing) and "not found" in info.value.problem
    out_dir = next((root / "clip").iterdir())
    assert len(list(out_dir.glob("shard-*.h5"))) == 3
    assert not list(out_dir.glob("*.tmp")) and not list(out_dir.glob(".*"))

    missing.write_bytes(kept)
    resumed = precompute_clip_features(root, workers=1, **settings)
    assert (resumed.computed, resumed.skipped) == (1, 3)
    assert sorted(ClipFeatureStore(out_dir).keys()) == sorted(s["key"] for s in samples)
