"""The smallest real trainings the engine tests share: 3D only (``TINY``) or BiFusion (``BIF_TINY``:
the demo's 2D branch, FiLM and gate, narrowed), tiny U-Net, no workers."""

from __future__ import annotations

from pathlib import Path

TINY = [
    "model.use_2d=false",
    "model.backbone3d.arch=MinkUNetTiny",
    "model.feat_dim=32",
    "model.decoder.num_layers=1",
    "model.decoder.num_heads=2",
    "model.decoder.ffn_dim=32",
    "data.num_workers=0",
    "data.batch_size=2",
    "train.log_every=1",
    "train.eval_every=1000",
    "train.checkpoint_every=1000",
    "train.device=cpu",
    "train.threads=1",
    "loss.spatial_anchors=64",
    "optim.warmup_iters=2",
]

BIF_TINY = [o for o in TINY if o != "model.use_2d=false"] + [
    "model.head2d_hidden=32",
    "model.film.hidden=16",
    "model.fusion.warmup_iters=0",
]


def cli_sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def tiny_cfg(data: Path, out: Path, *extra: str, max_iters: int = 4, base: list[str] = TINY):
    from bifusion_core.config import load_preset

    return load_preset("demo", [*base, *extra], **{"data.root": data, "train.output_dir": out, "train.max_iters": max_iters})
