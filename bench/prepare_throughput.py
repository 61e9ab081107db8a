"""Frames per second of ``bifusion prepare`` with 1 and with N worker processes.

Synthetic scans are written once (``.sens`` layout by default, the path a real download takes),
then prepared from scratch once per worker count into a fresh folder; the time includes process
start-up, mesh loading and every write, i.e. what a user waits for.
Usage: python bench/prepare_throughput.py [--scenes 4] [--frames 8] [--workers 1 2] [--image-size 640x480]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP, SyntheticOptions
from bifusion_core.data.synthetic.write import write_synthetic_scannet


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8, help="rendered frames per scene (raw step 20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--image-size", type=_size, default=(640, 480), help="prepared image size WxH")
    parser.add_argument("--depth-size", type=_size, default=(320, 240), help="synthetic depth camera WxH")
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--superpoints", default="image")
    parser.add_argument("--layout", default="sens", choices=("sens", "exported"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bifusion-prepare-bench-"))
    try:
        depth = args.depth_size
        options = SyntheticOptions(num_frames=args.frames, depth_size=depth, color_size=(2 * depth[0], 2 * depth[1]))
        start = time.perf_counter()
        write_synthetic_scannet(work / "raw", args.scenes, options=options, layout=args.layout)
        print(
            f"wrote {args.scenes} synthetic scenes x {args.frames} frames ({args.layout}, depth {depth[0]}x{depth[1]}) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        print(f"prepare: image {args.image_size[0]}x{args.image_size[1]}, {args.points} points, superpoints {args.superpoints}")
        baseline = None
        for workers in args.workers:
            out = work / f"out-{workers}"
            start = time.perf_counter()
            summary = prepare_scannet(
                work / "raw",
                out,
                mode="sv",
                frame_step=SYNTHETIC_FRAME_STEP,
                image_size=args.image_size,
                num_points=args.points,
                superpoints=args.superpoints,
                workers=workers,
            )
            seconds = time.perf_counter() - start
            fps = summary.frames / seconds
            baseline = baseline or fps
            print(f"workers={workers}: {summary.frames} frames in {seconds:.1f} s = {fps:.2f} frames/s ({fps / baseline:.2f}x)")
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
