"""Everything a run needs, built from one validated preset (train, resume, eval, validate share it)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from ..config.schema import Preset
from ..data.labels import LABEL_SETS, LabelSet
from ..data.loading.batch import collate
from ..data.loading.dataset import PreparedFrames
from ..reporting import NULL_REPORTER, Reporter

RANDOM_CLIP_SEED = 0  # the random ViT-B/16 used when a preset names no CLIP weights


def label_set(cfg: Preset) -> LabelSet:
    return LABEL_SETS[cfg.data.benchmark]


def pick_device(cfg: Preset) -> torch.device:
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_threads(cfg: Preset, device: torch.device) -> int | None:
    """Intra-op threads for a process that reads through ``build_loader``: ``train.threads`` if set;
    on CPU otherwise the cores left after the DataLoader workers (one core each), unless
    ``OMP_NUM_THREADS`` already says.

    torch's default (every core) makes the main process fight its own workers for the cores: a
    parallel region whose second thread is descheduled spins. None: leave torch's setting alone
    (CUDA, or the user's).
    """
    if cfg.train.threads:
        return cfg.train.threads
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - cfg.data.num_workers)


def configure_threads(cfg: Preset, device: torch.device) -> None:
    """Call once the device is known, before building the loader (streaming has no workers: skip)."""
    threads = cpu_threads(cfg, device)
    if threads is not None:
        torch.set_num_threads(threads)


def clip_weights_path(cfg: Preset, *, reporter: Reporter = NULL_REPORTER) -> Path:
    """The preset's CLIP weights, or a seeded random ViT-B/16 kept in the user cache.

    The random file goes through the same loading code as real weights, so tests and the
    demo exercise the path users take with ``--clip-weights open_clip_pytorch_model.bin``; its
    bytes are the same for every data root, so features computed with it can be shared. Call
    this only after the data root has been checked: it writes the file on first use.
    """
    if cfg.clip.weights is not None:
        return Path(cfg.clip.weights)
    from ..features.clip_encoder import cached_random_clip_weights

    path = cached_random_clip_weights(RANDOM_CLIP_SEED)
    reporter.note(f"no CLIP weights given: using a RANDOM ViT-B/16 initialisation ({path})")
    return path


def clip_source(cfg: Preset, data_root: Path, reporter: Reporter = NULL_REPORTER):
    """Stored CLIP tokens with online fallback; None for 3D-only presets."""
    if not cfg.model.use_2d:
        return None
    from ..features.clip_source import ClipFeatureSource

    weights = clip_weights_path(cfg, reporter=reporter)
    settings = dict(num_layers=stored_clip_layers(cfg), weights=weights, image_size=tuple(cfg.data.image_size))
    if not cfg.clip.use_precomputed:
        return ClipFeatureSource(None, **settings)
    return ClipFeatureSource.for_data_root(data_root, **settings)


def attach_clip_source(ds, source) -> None:
    """Give a dataset built without CLIP features its source: datasets are built (and the data
    root and split checked) first, because the source may write the random CLIP weights."""
    if ds is not None:
        (ds.dataset if isinstance(ds, Subset) else ds).clip_source = source  # build_dataset(..., limit=) wraps it


def stored_clip_layers(cfg: Preset) -> int:
    """CLIP blocks whose output is stored: the last ``train.unfreeze.clip_blocks`` run online in the model."""
    return cfg.clip.num_layers - cfg.train.unfreeze.clip_blocks


def build_dataset(cfg: Preset, data_root: Path, split: str | None, train: bool, source=None, limit: int | None = None):
    """Single frames (``data.mode: sv``) or runs of ``data.num_frames`` consecutive frames (``mv``)."""
    common = dict(augment=cfg.data.augment if train else None, clip_source=source)
    if cfg.data.mode == "mv":
        from ..data.loading.sequences import PreparedSequences

        ds = PreparedSequences(
            data_root,
            split,
            label_set(cfg),
            cfg.data.voxel_size,
            num_frames=cfg.data.num_frames,
            per_frame=cfg.data.mv_decode == "frame",
            **common,
        )
        return ds if limit is None else Subset(ds, range(min(limit, len(ds))))
    return PreparedFrames(data_root, split, label_set(cfg), cfg.data.voxel_size, mode=cfg.data.mode, limit=limit, **common)


def build_loader(cfg: Preset, ds, train: bool, seed: int = 0, sampler=None) -> DataLoader:
    """``sampler``: the trainer's resumable sample stream (it shuffles and splits across ranks)."""
    workers = cfg.data.num_workers
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=cfg.data.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train and sampler is None and len(ds) >= cfg.data.batch_size,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        generator=generator,
    )
