"""``bifusion stats``: what a prepared data root holds, before spending hours training on it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import LABEL_SETS
from ..prepare.manifest import load_manifest


def dataset_stats(cfg) -> dict[str, Any]:
    root = Path(cfg.data.root)
    manifest = load_manifest(root, cfg.data.mode)
    labels = LABEL_SETS[cfg.data.benchmark]
    splits = Counter(r["split"] for r in manifest["samples"])
    classes: Counter = Counter()
    instances, superpoints, points = [], [], 0
    for rec in manifest["samples"]:
        with np.load(root / cfg.data.mode / rec["file"]) as sample:
            raw = sample[labels.sample_key]
            classes.update({labels.names[i]: n for i, n in labels.class_counts(raw).items()})
            inst = sample["instance"][labels.instance_class_ids(raw) >= 0]
            instances.append(len(np.unique(inst[inst > 0])))
            superpoints.append(int(sample["superpoints"].max()) + 1)  # contiguous 0..S-1
            points += len(raw)
    clip_frames = 0
    clip_root = root / "clip"
    if clip_root.is_dir():
        import h5py

        keys: set[str] = set()
        for shard in clip_root.glob("*/shard-*.h5"):
            with h5py.File(shard, "r") as f:
                f.visit(lambda name: keys.add(name) if name.count("/") == 1 else None)
        clip_frames = len(keys)
    summary = {
        "scenes": float(len({r["scene"] for r in manifest["samples"]})),
        **{f"frames/{s}": float(n) for s, n in sorted(splits.items())},
        "points": float(points),
        "instances per frame": float(np.mean(instances)) if instances else 0.0,
        "superpoints per frame": float(np.mean(superpoints)) if superpoints else 0.0,
        "frames with CLIP features (any setting)": float(clip_frames),
        "skipped frames": float(len(manifest.get("skipped", []))),
        "skipped scenes": float(len(manifest.get("skipped_scenes", []))),
    }
    return {"summary": summary, "classes": {k: float(v) for k, v in classes.most_common(20)}}


def semantic_point_counts(
    root: str | Path, mode: str, records: list[dict[str, Any]], labels, max_samples: int = 2000
) -> np.ndarray:
    """Labelled points per semantic class over ``records`` (at most ``max_samples`` of them, evenly
    spaced: class shares settle long before a full ScanNet split is read)."""
    step = max(1, -(-len(records) // max_samples))
    counts = np.zeros(labels.num_semantic, dtype=np.int64)
    for rec in records[::step]:
        with np.load(Path(root) / mode / rec["file"]) as sample:
            for train_id, n in labels.class_counts(sample[labels.sample_key]).items():
                counts[train_id] += n
    return counts


def balanced_class_weights(counts: np.ndarray, power: float) -> np.ndarray:
    """Weights ∝ share^-power, scaled so the mean weight over the counted points is 1 (the loss keeps
    its scale); classes without points get the largest weight seen."""
    share = counts / max(counts.sum(), 1)
    weights = np.zeros(len(counts))
    seen = counts > 0
    weights[seen] = share[seen] ** -power
    weights[~seen] = weights[seen].max() if seen.any() else 1.0
    return weights / max((weights * share).sum(), 1e-12)
