"""Scene AP50 of online evaluation for several merge thresholds (``eval.online.merge_threshold``).

Streams every val scan once per threshold through ``evaluate_online`` (nothing written to the
run folder) and prints mesh-vertex AP50 per class and class-agnostic, mIoU and instances merged.
Needs a trained MV checkpoint: without --checkpoint the newest ``outputs/demo-mv/*`` run under
--outputs is used; with none found it says so and exits 2.

Usage: python bench/merge_sweep.py [--checkpoint RUN] [--data DATA] [--thresholds 0.05 0.1 0.2 0.3 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bifusion_core.online.evaluate import evaluate_online

PROTOCOL = "mesh-vertex"


def newest_run(outputs: Path) -> Path | None:
    runs = sorted(outputs.glob("demo-mv/*/checkpoints/*.pt"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent.parent if runs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--data", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    args = parser.parse_args()
    target = args.checkpoint or newest_run(args.outputs)
    if target is None:
        print(f"no trained MV checkpoint: pass --checkpoint or train demo-mv under {args.outputs}/", file=sys.stderr)
        sys.exit(2)
    print(f"merge-threshold sweep · {target} · {args.split} · protocol {PROTOCOL}")
    print(f"{'threshold':>9} {'AP50':>7} {'AP50 agn.':>9} {'AP agn.':>8} {'mIoU':>7} {'ms/frame':>9}")
    for t in args.thresholds:
        result = evaluate_online(
            target,
            split=args.split,
            data_root=args.data,
            overrides={"eval.online.merge_threshold": t},
            write_metrics=False,
        )
        m = result.tables[PROTOCOL]
        print(
            f"{t:>9.2f} {m['instance/ap50']:>7.4f} {m['instance/ap50_class_agnostic']:>9.4f} "
            f"{m['instance/ap_class_agnostic']:>8.4f} {m['semantic/miou']:>7.4f} {result.speed['ms_per_frame']:>9.1f}"
        )


if __name__ == "__main__":
    main()
