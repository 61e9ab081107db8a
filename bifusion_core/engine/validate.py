"""``bifusion validate``: the three checks worth running before a long job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BifusionError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(preset: str, overrides: list[str], data_root: Path | None) -> list[Check]:
    from ..config import load_preset

    try:
        cfg = load_preset(preset, overrides, **{"data.root": data_root})
    except BifusionError as exc:
        return [Check("preset", False, str(exc))]
    checks = [Check("preset", True, f"{cfg.name}: {cfg.data.benchmark}, {'BiFusion' if cfg.model.use_2d else '3D only'}, "
                    f"{cfg.model.backbone3d.arch} @ {cfg.data.voxel_size * 100:g} cm")]
    checks.append(_check_data(cfg))
    checks.append(_check_model(cfg))
    return checks


def _check_data(cfg) -> Check:
    from ..data.manifest import load_manifest

    root = Path(cfg.data.root)
    try:
        manifest = load_manifest(root, cfg.data.mode)
    except BifusionError as exc:
        return Check("data", False, str(exc))
    splits: dict[str, int] = {}
    for rec in manifest["samples"]:
        splits[rec["split"]] = splits.get(rec["split"], 0) + 1
    missing = [r["file"] for r in manifest["samples"][:50] if not (root / cfg.data.mode / r["file"]).is_file()]
    if missing:
        return Check("data", False, f"{root / cfg.data.mode / missing[0]}: listed in the manifest but missing")
    if tuple(manifest.get("image_size", cfg.data.image_size)) != tuple(cfg.data.image_size):
        return Check("data", False, f"{root}: prepared at image size {manifest['image_size']}, preset wants {list(cfg.data.image_size)}")
    if cfg.clip.weights is not None and not Path(cfg.clip.weights).is_file():
        return Check("data", False, f"{cfg.clip.weights}: CLIP weights file not found")
    text = ", ".join(f"{n} {s}" for s, n in sorted(splits.items()))
    return Check("data", True, f"{root}: {text} frames")


def tiny_batch(cfg, labels, num_points: int = 600, seed: int = 0):
    """A random two-frame batch with the preset's shapes: exercises the model without any data."""
    import torch

    from ..data.batch import collate, voxelize
    from ..ops import contiguous_ids

    rng = np.random.default_rng(seed)
    w, h = cfg.data.image_size
    fx = fy = 0.9 * w
    intrinsic = np.array([[fx, 0, (w - 1) / 2], [0, fy, (h - 1) / 2], [0, 0, 1]], np.float32)
    samples = []
    for b in range(2):
        u, v = rng.uniform(0, w - 1, num_points), rng.uniform(0, h - 1, num_points)
        z = rng.uniform(1.0, 3.0, num_points)
        points = np.stack([(u - intrinsic[0, 2]) * z / fx, (v - intrinsic[1, 2]) * z / fy, z], 1).astype(np.float32)
        depth = np.zeros((h, w), np.float32)
        depth[np.round(v).astype(int), np.round(u).astype(int)] = z
        feats = rng.uniform(-0.5, 0.5, (num_points, cfg.model.backbone3d.in_channels)).astype(np.float32)
        coords, inverse, voxel_feats = voxelize(points, feats, cfg.data.voxel_size)
        thing = np.asarray(labels.thing_raw_ids[:3])
        instance = rng.integers(0, 4, num_points)
        raw = np.where(instance > 0, thing[instance % 3], labels.raw_ids[0])
        samples.append({
            "key": f"tiny/{b:06d}", "points": points, "points_aug": points - points.mean(0),
            "voxel_coords": coords, "voxel_inverse": inverse, "voxel_feats": voxel_feats,
            "superpoints": contiguous_ids(rng.integers(0, 20, num_points)).astype(np.int64),
            "semantic": labels.semantic_train_ids(raw), "instance": instance,
            "instance_class": np.where(instance > 0, labels.instance_class_ids(raw), -1), "label_raw": raw,
            "point_frame": np.zeros(num_points, np.int64),
            "pixels": np.stack([u, v], 1).astype(np.float32), "valid": np.arange(num_points) % 10 != 0,  # some points unseen: the no-view path runs
            "world_to_depth": np.eye(4)[None], "intrinsic": intrinsic[None], "depth": depth[None],
            "color_intrinsic": intrinsic[None], "world_to_color": np.eye(4)[None],
        })
        if cfg.model.use_2d:
            samples[-1]["clip_patch"] = torch.randn(1, 768, h // 16, w // 16)
            samples[-1]["clip_global"] = torch.randn(1, 768)
    return collate(samples)


def _check_model(cfg) -> Check:
    try:
        import torch

        from ..losses.criterion import Criterion
        from ..models.bifusion import build_model, count_parameters
        from . import builders

        labels = builders.label_set(cfg)
        model = build_model(cfg, labels)
        batch = tiny_batch(cfg, labels)
        model.train()
        out = model(batch)
        loss, terms = Criterion(cfg.loss, labels.num_instance)(out, batch)
        loss.backward()
        if not torch.isfinite(loss):
            return Check("model", False, f"non-finite loss on a tiny batch: {terms}")
    except BifusionError as exc:
        return Check("model", False, str(exc))
    except Exception as exc:  # the point of this check is to catch anything the build raises
        return Check("model", False, f"model build/forward failed: {exc.__class__.__name__}: {exc}")
    parts = [f"{count_parameters(model) / 1e6:.2f} M parameters"]
    if cfg.model.use_2d:
        parts.append(f"{cfg.model.fusion.gate} gate {count_parameters(model.gate) / 1e6:.3f} M, 2D head {count_parameters(model.head2d) / 1e6:.2f} M")
    for name, label in (("film", "FiLM"), ("tiny_sa", "Tiny-SA"), ("clip_tail", "online CLIP blocks")):
        if hasattr(model, name):
            parts.append(f"{label} {count_parameters(getattr(model, name)) / 1e6:.3f} M")
    parts.append(f"forward+backward on 2×600 points ok (loss {terms['total']:.3f})")
    return Check("model", True, "; ".join(parts))
