"""P2: random-access reads of one frame's stored CLIP features: HDF5 shards ÷ one ``.pt`` per frame.

The HDF5 side is what training reads through (``ClipFeatureSource.get`` over the product's
``ClipFeatureStore``); the ``.pt`` side is the per-frame layout the design notes started from
(``torch.save`` of the same float16 patch and global tokens, written here only), read with
``torch.load`` and converted to float32 like the source does. Both read the frames in the same
random order. Warm: the files are in the page cache and the store keeps its handles open, as in a
DataLoader worker after the first batch. Cold: every file is dropped from the page cache
(``posix_fadvise(DONTNEED)`` after an fsync) and the HDF5 side starts from a fresh store, so its
timing includes opening the shards and building the key index.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bifusion_core.data.prepare.manifest import prepared_images  # noqa: E402
from bifusion_core.features.clip_precompute import precompute_clip_features  # noqa: E402
from bifusion_core.features.clip_source import ClipFeatureSource  # noqa: E402
from bifusion_core.features.clip_store import ClipFeatureStore  # noqa: E402
from common import Figure, emit, parser, synthetic_root, work_folder  # noqa: E402

WARM_TARGET, COLD_TARGET = 1.0, 2.0


def drop_page_cache(files: list[Path]) -> None:
    """Evict the files from the page cache (no root needed); dirty pages are flushed first."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write_pt_files(store: ClipFeatureStore, keys: list[str], out: Path) -> dict[str, Path]:
    paths = {}
    for key in keys:
        patch, global_token = store.get(key)
        path = out / f"{key.replace('/', '_')}.pt"
        torch.save({"patch": torch.from_numpy(patch), "global": torch.from_numpy(global_token)}, path)
        paths[key] = path
    return paths


def read_pt(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    saved = torch.load(path, weights_only=True)
    return saved["patch"].float(), saved["global"].float()


def hdf5_pass(source: ClipFeatureSource, order: list[str]) -> float:
    start = time.perf_counter()
    for key in order:
        patch, _ = source.get(key, "")
        assert patch.dtype == torch.float32
    return time.perf_counter() - start


def pt_pass(paths: dict[str, Path], order: list[str]) -> float:
    start = time.perf_counter()
    for key in order:
        patch, _ = read_pt(paths[key])
        assert patch.dtype == torch.float32
    return time.perf_counter() - start


def main() -> None:
    args = parser(__doc__).parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker (and fp16 -> fp32 on 2 threads is pure overhead)
    work = work_folder(args, "p2")
    if args.quick:
        scenes, frames, warm_passes, cold_passes = 1, 4, 2, 1
    else:  # the root P1 uses (shared through --work); about 30 s of reads
        scenes, frames, warm_passes, cold_passes = 2, 40, 6, 3
    size = (224, 160)
    root = synthetic_root(work, scenes, frames, 2000, size)
    # Stored tokens are 768 x h x w float16 whatever the depth, so the cheapest encoder (patch
    # embedding only) gives features of the stored size.
    summary = precompute_clip_features(root, num_layers=0, weights=None, image_size=size, batch_size=8)
    keys = [frame.key for frame in prepared_images(root, size)]
    pt_dir = work / f"p2-pt-{scenes}x{frames}"
    pt_dir.mkdir(exist_ok=True)
    with ClipFeatureStore(summary.dir) as store:
        paths = write_pt_files(store, keys, pt_dir)
    shards = sorted(summary.dir.glob("shard-*.h5"))
    rng = random.Random(0)

    def new_source() -> ClipFeatureSource:
        return ClipFeatureSource(ClipFeatureStore(summary.dir), num_layers=0, weights=None, image_size=size)

    warm_source = new_source()
    hdf5_pass(warm_source, keys)  # first touch: page cache, open handles, key index
    pt_pass(paths, keys)
    times: dict[str, list[float]] = {"hdf5_warm": [], "pt_warm": [], "hdf5_cold": [], "pt_cold": []}
    for r in range(warm_passes):
        order = rng.sample(keys, len(keys))
        sides = ("hdf5", "pt") if r % 2 == 0 else ("pt", "hdf5")
        for side in sides:
            times[f"{side}_warm"].append(hdf5_pass(warm_source, order) if side == "hdf5" else pt_pass(paths, order))
    warm_source.close()
    for r in range(cold_passes):
        order = rng.sample(keys, len(keys))
        sides = ("hdf5", "pt") if r % 2 == 0 else ("pt", "hdf5")
        for side in sides:
            if side == "hdf5":
                drop_page_cache(shards)
                start = time.perf_counter()
                source = new_source()  # opening and indexing the shards is part of a cold start
                hdf5_pass(source, order)
                times["hdf5_cold"].append(time.perf_counter() - start)
                source.close()
            else:
                drop_page_cache(list(paths.values()))
                times["pt_cold"].append(pt_pass(paths, order))

    fps = {name: len(keys) * len(t) / sum(t) for name, t in times.items()}
    warm = fps["hdf5_warm"] / fps["pt_warm"]
    cold = fps["hdf5_cold"] / fps["pt_cold"]
    tokens = f"{size[0] // 16}x{size[1] // 16} tokens"
    common = {
        "frames": len(keys),
        "shards": len(shards),
        "bytes_per_frame": 768 * (size[0] // 16) * (size[1] // 16) * 2 + 768 * 2,
        "frames_per_s": fps,
        "seconds": times,
        # the drop is real when cold reads are clearly slower than warm ones
        "cold_over_warm_time_hdf5": fps["hdf5_warm"] / fps["hdf5_cold"],
        "cold_over_warm_time_pt": fps["pt_warm"] / fps["pt_cold"],
    }
    figures = [
        Figure(
            "P2a",
            f"feature reads, warm page cache: HDF5 ÷ .pt per frame ({tokens})",
            f"{fps['hdf5_warm']:.0f} vs {fps['pt_warm']:.0f} frames/s",
            warm,
            f"≥ {WARM_TARGET:g}×",
            warm >= WARM_TARGET,
            common,
        ),
        Figure(
            "P2b",
            f"feature reads, cold page cache: HDF5 ÷ .pt per frame ({tokens})",
            f"{fps['hdf5_cold']:.0f} vs {fps['pt_cold']:.0f} frames/s",
            cold,
            f"≥ {COLD_TARGET:g}×",
            cold >= COLD_TARGET,
            common,
        ),
    ]
    emit(figures, args.json)


if __name__ == "__main__":
    main()
