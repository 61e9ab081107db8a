"""``bifusion validate``: the three checks worth running before a long job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    checks = [
        Check(
            "preset",
            True,
            f"{cfg.name}: {cfg.data.benchmark}, {'BiFusion' if cfg.model.use_2d else '3D only'}, "
            f"{cfg.model.backbone3d.arch} @ {cfg.data.voxel_size * 100:g} cm",
        )
    ]
    checks.append(_check_data(cfg))
    checks.append(_check_model(cfg))
    return checks


def _check_data(cfg) -> Check:
    from ..data.prepare.manifest import load_manifest

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
        return Check(
            "data", False, f"{root}: prepared at image size {manifest['image_size']}, preset wants {list(cfg.data.image_size)}"
        )
    if cfg.clip.weights is not None and not Path(cfg.clip.weights).is_file():
        return Check("data", False, f"{cfg.clip.weights}: CLIP weights file not found")
    text = ", ".join(f"{n} {s}" for s, n in sorted(splits.items()))
    return Check("data", True, f"{root}: {text} frames")


def _check_model(cfg) -> Check:
    try:
        import torch

        from ..data.loading.random_batch import random_batch
        from ..losses.criterion import Criterion
        from ..models.bifusion import build_model, count_parameters
        from . import builders

        labels = builders.label_set(cfg)
        model = build_model(cfg, labels)
        batch = random_batch(cfg, labels)
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
        parts.append(
            f"{cfg.model.fusion.gate} gate {count_parameters(model.gate) / 1e6:.3f} M, "
            f"2D head {count_parameters(model.head2d) / 1e6:.2f} M"
        )
    for name, label in (("film", "FiLM"), ("tiny_sa", "Tiny-SA"), ("clip_tail", "online CLIP blocks")):
        if getattr(model, name) is not None:
            parts.append(f"{label} {count_parameters(getattr(model, name)) / 1e6:.3f} M")
    parts.append(f"forward+backward on 2×600 points ok (loss {terms['total']:.3f})")
    return Check("model", True, "; ".join(parts))
