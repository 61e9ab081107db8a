"""Offline CLIP features: computed once per prepared frame into HDF5 shards, and checked.

The frozen image branch gives the same tokens for a frame in every epoch, so computing them once
removes the ViT from the training loop (``clip_source.ClipFeatureSource`` reads them back).
Precompute is incremental and restartable: a re-run skips every frame already in a complete
shard, and ``workers > 1`` splits the rest into contiguous chunks, one spawned process each.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..data.prepare.manifest import PreparedImage, prepared_images
from ..errors import BifusionError
from ..images import check_image_size, read_rgb
from ..parallel import run_jobs
from ..reporting import NULL_REPORTER, Reporter
from .clip_encoder import encode_image_array, load_clip_encoder, preprocess_images, weights_digest
from .clip_store import DEFAULT_COMPRESSION, ClipFeatureStore, ShardSettings, ShardWriter, clip_feature_dir

PRECOMPUTE_TASK = "precompute CLIP features"
VERIFY_TASK = "verify CLIP features"
# Relative L2 difference of stored vs recomputed features that still counts as intact: float16
# storage alone gives about 3e-4 (half an fp16 ulp), features of other weights, layers, images or
# preprocessing differ by O(1).
VERIFY_TOLERANCE = 1e-3


@dataclass
class PrecomputeSummary:
    tag: str
    dir: Path
    computed: int
    skipped: int
    total: int
    seconds: float
    random_init: bool


def check_prepared_images(data_root: str | Path, image_size: Sequence[int]) -> int:
    """Frames whose features ``precompute_clip_features`` would store; raises (one line) on a bad data root."""
    return len(prepared_images(data_root, check_image_size(image_size)))


@dataclass(frozen=True)
class _Chunk:
    """One worker's share: plain data, so it pickles under spawn."""

    frames: Sequence[PreparedImage]
    worker: int
    threads: int | None  # torch threads of a worker process (None: this process, left as it is)
    num_layers: int
    weights: str | None
    batch_size: int
    device: str
    out_dir: str
    run_id: str
    frames_per_shard: int
    shard: ShardSettings


def _compute_chunk(chunk: _Chunk, reporter: Reporter) -> list[str]:
    """Encode a chunk's frames into new shards of its worker; returns the published shard names.

    Three stages overlap, so the ViT never waits for JPEG decoding or HDF5 writes: a reader thread
    decodes the next batch while this thread encodes the current one, and a writer thread stores
    the previous one (torch, PIL and HDF5 all release the GIL in their heavy parts). Each side
    thread works in order, one batch ahead or behind; an error in either is raised here.
    """
    if chunk.threads is not None:
        torch.set_num_threads(chunk.threads)
    encoder, _ = load_clip_encoder(chunk.num_layers, chunk.weights, chunk.device)
    prefix = f"{chunk.run_id}-w{chunk.worker:02d}"
    size = chunk.shard.image_size

    def read(batch: Sequence[PreparedImage]) -> np.ndarray:
        return np.stack([read_rgb(frame.image, size) for frame in batch])

    def write(batch: Sequence[PreparedImage], patches: np.ndarray, globals_: np.ndarray) -> int:
        for frame, patch, global_token in zip(batch, patches, globals_):
            writer.add(frame.key, patch, global_token)
        return len(batch)

    batches = list(_batches(chunk.frames, chunk.batch_size))
    with (
        ShardWriter(chunk.out_dir, prefix, chunk.shard, chunk.frames_per_shard) as writer,
        ThreadPoolExecutor(1, thread_name_prefix="clip-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="clip-write") as storer,
    ):
        # leaving the block (also on an error) joins both threads before the writer closes its shard
        pending_read = reader.submit(read, batches[0]) if batches else None
        pending_write: Future[int] | None = None
        for i, batch in enumerate(batches):
            assert pending_read is not None
            images = pending_read.result()
            pending_read = reader.submit(read, batches[i + 1]) if i + 1 < len(batches) else None
            patches, globals_ = encode_image_array(encoder, images, chunk.device)
            if pending_write is not None:  # at most one batch waits for the disk
                reporter.advance(PRECOMPUTE_TASK, pending_write.result())
            pending_write = storer.submit(write, batch, patches, globals_)
        if pending_write is not None:
            reporter.advance(PRECOMPUTE_TASK, pending_write.result())
    return writer.published


def precompute_clip_features(
    data_root: str | Path,
    *,
    num_layers: int,
    weights: str | Path | None,
    image_size: Sequence[int],
    workers: int = 1,
    batch_size: int = 8,
    device: str = "cpu",
    reporter: Reporter = NULL_REPORTER,
    frames_per_shard: int = 512,
    compression: str | None = DEFAULT_COMPRESSION,
) -> PrecomputeSummary:
    """Store CLIP features of every manifest frame not stored yet (incremental, restartable).

    ``workers > 1`` splits the remaining frames into contiguous chunks, one spawned process each,
    with ``cores // workers`` torch threads per process; ``workers == 1`` runs in this process.
    Each worker publishes its own shards (``frames_per_shard`` frames each) atomically.
    """
    started = time.perf_counter()
    data_root = Path(data_root)
    size = check_image_size(image_size)
    if workers < 1 or batch_size < 1 or frames_per_shard < 1:
        raise BifusionError("precompute", "workers, batch_size and frames_per_shard must be >= 1")
    frames = prepared_images(data_root, size)
    digest = weights_digest(weights)
    out_dir = clip_feature_dir(data_root, num_layers, size, digest)

    with ClipFeatureStore(out_dir) as store:
        todo = [frame for frame in frames if frame.key not in store]
    reporter.task(PRECOMPUTE_TASK, len(todo))
    if todo:
        out_dir.mkdir(parents=True, exist_ok=True)
        parts = _split_contiguous(todo, min(workers, len(todo)))
        threads = max(1, _available_cores() // len(parts)) if len(parts) > 1 else None
        run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        chunks = [
            _Chunk(
                part,
                i,
                threads,
                num_layers,
                None if weights is None else str(weights),
                batch_size,
                str(device),
                str(out_dir),
                run_id,
                frames_per_shard,
                ShardSettings(num_layers, size, digest, compression),
            )
            for i, part in enumerate(parts)
        ]
        for _ in run_jobs(_compute_chunk, chunks, len(chunks), reporter):
            pass
    return PrecomputeSummary(
        tag=out_dir.name,
        dir=out_dir,
        computed=len(todo),
        skipped=len(frames) - len(todo),
        total=len(frames),
        seconds=time.perf_counter() - started,
        random_init=weights is None,
    )


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _split_contiguous(frames: Sequence[PreparedImage], parts: int) -> list[Sequence[PreparedImage]]:
    """Contiguous chunks (frames of a scene stay together in one shard), sizes differing by <= 1."""
    size, extra = divmod(len(frames), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(frames[start:end])
        start = end
    return [c for c in chunks if len(c)]


def verify_clip_features(
    data_root: str | Path,
    *,
    num_layers: int,
    weights: str | Path | None,
    image_size: Sequence[int],
    k: int,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 8,
    reporter: Reporter = NULL_REPORTER,
) -> float:
    """Recompute ``k`` random stored frames; return the worst *relative* L2 difference.

    Per frame, for both the patch map and the global vector: ``||stored - recomputed||_2 /
    ||stored||_2`` over the flattened tensor; the maximum is returned. Relative, because
    absolute token norms depend on the weights and layer (hundreds for some layers), so an
    absolute threshold would be meaningless. float16 storage alone gives about 3e-4 (half an
    fp16 ulp, relative), so ``< VERIFY_TOLERANCE`` (1e-3) passes for intact features and fails for features of other
    weights, layers, images or preprocessing (those differ by O(1)).
    """
    data_root = Path(data_root)
    size = check_image_size(image_size)
    frames = {frame.key: frame for frame in prepared_images(data_root, size)}
    digest = weights_digest(weights)
    out_dir = clip_feature_dir(data_root, num_layers, size, digest)
    with ClipFeatureStore(out_dir) as store:
        stored = sorted(key for key in store.keys() if key in frames)
        if not stored:
            raise BifusionError(out_dir, "no stored CLIP features for frames of this manifest; run precompute first")
        chosen = random.Random(seed).sample(stored, min(k, len(stored)))
        reporter.task(VERIFY_TASK, len(chosen))
        encoder, _ = load_clip_encoder(num_layers, weights, device)
        worst = 0.0
        for batch in _batches(chosen, batch_size):
            images = [read_rgb(frames[key].image, size) for key in batch]
            with torch.inference_mode():
                patch, global_token = encoder(preprocess_images(np.stack(images), device=device))
            for i, key in enumerate(batch):
                got = store.get(key)
                assert got is not None
                for saved, fresh in zip(got, (patch[i], global_token[i])):
                    saved_t = torch.from_numpy(saved).double()
                    fresh_t = fresh.detach().cpu().double()
                    if saved_t.shape != fresh_t.shape:
                        return float("inf")
                    diff = (saved_t - fresh_t).norm() / saved_t.norm().clamp_min(1e-12)
                    worst = max(worst, float(diff) if torch.isfinite(diff) else float("inf"))
            reporter.advance(VERIFY_TASK, len(batch))
    return worst
