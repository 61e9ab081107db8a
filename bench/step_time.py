"""Train-step time of BiFusion ÷ 3D-only on the same batch (precomputed CLIP tokens).

Target: ≤ 1.3 — the 2D branch must stay cheap next to the sparse U-Net.
Usage: python bench/step_time.py [--preset demo] [--points 4096] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from bifusion_core.config import load_preset
from bifusion_core.data.random_batch import random_batch
from bifusion_core.losses.criterion import Criterion
from bifusion_core.models.bifusion import build_model
from bifusion_core.engine.builders import label_set


def step_seconds(cfg, batch, steps: int) -> float:
    labels = label_set(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, labels).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = Criterion(cfg.loss, labels.num_instance)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss, _ = criterion(model(batch), batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    fused = load_preset(args.preset, ["model.use_2d=true", "model.fusion.warmup_iters=0"])
    only3d = load_preset(args.preset, ["model.use_2d=false"])
    batch = random_batch(fused, label_set(fused), num_points=args.points)
    t_fused = step_seconds(fused, batch, args.steps)
    t_3d = step_seconds(only3d, batch, args.steps)
    print(f"preset {args.preset}, 2 frames × {args.points} points, median of {args.steps} steps")
    print(f"3D-only step   {t_3d * 1000:8.1f} ms")
    print(f"BiFusion step  {t_fused * 1000:8.1f} ms")
    print(f"ratio BiFusion/3D-only = {t_fused / t_3d:.2f} (target ≤ 1.30)")


if __name__ == "__main__":
    main()
