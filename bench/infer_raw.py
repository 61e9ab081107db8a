"""``bifusion infer --frames`` on a long generated recording: ms per frame and whether memory stays bounded.

A synthetic room is rendered from ``--loop`` poses on one orbit and written in the plain layout
(docs/OWN_DATA.md) ``--frames / --loop`` times over, under consecutive indices, like a robot
patrolling one room (each pass samples other points: sampling is seeded by the frame index),
plus one lost-tracking frame at the end. The recording is streamed through the real entry point
(``online.infer_recording.infer_recording``: reading, sampling, superpoints, CLIP tokens from the
frozen encoder, forward, merge, all outputs written). Every ``--every`` frames the bench records
the online state (fused points, one per ``eval.online.voxel`` cell; instance memory) and the
process's current and peak RSS: after the first pass the room is covered, and neither the state
nor the RSS may keep growing with the frame count. The fused points can never exceed the voxel
cap: the distinct cells of every usable depth pixel of the distinct views.

Usage: python bench/infer_raw.py [--checkpoint RUN] [--preset demo-mv] [--frames 1000] [--loop 250]
       [--every 100] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.prepare.frame_sample import FrameSampling, observe_frame
from bifusion_core.data.prepare.settings import PrepareConfig
from bifusion_core.data.raw.plain_frames import PlainFrames
from bifusion_core.data.raw.scannet_files import write_depth, write_matrix
from bifusion_core.data.synthetic.render import synthetic_frame
from bifusion_core.data.synthetic.room import SyntheticOptions, synthetic_scene
from bifusion_core.engine import builders
from bifusion_core.engine.checkpoint import save_checkpoint
from bifusion_core.measure import current_rss_mb, peak_rss_mb
from bifusion_core.models.bifusion import build_model
from bifusion_core.online.infer_recording import RecordingSettings, infer_recording
from bifusion_core.online.point_map import voxel_keys
from bifusion_core.reporting import Reporter
from bifusion_core.runs.restore import restore_model


def write_recording(folder: Path, frames: int, loop: int) -> None:
    """``frames`` plain-layout frames cycling through ``loop`` rendered views, then one lost frame."""
    scene = synthetic_scene(0, 0, SyntheticOptions(num_frames=loop))
    folder.mkdir(parents=True)
    for name, k in (("intrinsics.txt", scene.color_intrinsic), ("depth_intrinsics.txt", scene.depth_intrinsic)):
        np.savetxt(folder / name, k, fmt="%f")
    for sub in ("color", "depth", "pose"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    views = [synthetic_frame(scene, frame) for frame in scene.frames]
    for index in range(frames):
        pose, depth_mm, jpeg = views[index % loop]
        (folder / "color" / f"{index:06d}.jpg").write_bytes(jpeg)
        write_depth(folder / "depth" / f"{index:06d}.png", depth_mm)
        write_matrix(folder / "pose" / f"{index:06d}.txt", pose)
    write_depth(folder / "depth" / f"{frames:06d}.png", views[-1][1])
    (folder / "color" / f"{frames:06d}.jpg").write_bytes(views[-1][2])
    write_matrix(folder / "pose" / f"{frames:06d}.txt", np.full((4, 4), -np.inf))


def untrained_run(folder: Path, preset: str, device: str) -> Path:
    cfg = load_preset(preset, ["clip.use_precomputed=false", f"train.device={device}"])
    cfg.clip.weights = builders.clip_weights_path(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, LABEL_SETS[cfg.data.benchmark])
    path = folder / "checkpoints" / "last.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.model_dump(mode="json"), "iteration": 0})
    return path


def voxel_cap(folder: Path, loop: int, image_size: tuple[int, int], voxel: float) -> int:
    """Distinct ``voxel`` cells of every usable depth pixel of the ``loop`` distinct views at the run's
    image size: the most fused points the recording can give, however many passes it makes."""
    source = PlainFrames(folder)
    source.check_files(list(range(loop)))
    every_pixel = FrameSampling(image_size, image_size[0] * image_size[1], PrepareConfig().depth_range, 0)
    keys = [voxel_keys(observe_frame(source, frame, "cap", every_pixel).arrays["points"], voxel) for frame in range(loop)]
    return len(np.unique(np.concatenate(keys)))


class StateProbe(Reporter):
    """Records the online state every ``every`` streamed frames (the segmenter reports it after each frame)."""

    def __init__(self, every: int):
        self.every, self.frames, self.rows = every, 0, []
        self.started = time.perf_counter()

    def metrics(self, values: dict[str, Any]) -> None:
        self.frames += 1
        if self.frames % self.every == 0:
            self.rows.append(
                {
                    "frames": self.frames,
                    "fused_points": int(values["fused_points"]),
                    "instances": int(values["instances"]),
                    "state_mb": round(float(values["state_mb"]), 2),
                    "current_rss_mb": round(current_rss_mb(), 1),
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                    "s": round(time.perf_counter() - self.started, 1),
                }
            )
            r = self.rows[-1]
            print(
                f"  {r['frames']:>5} frames: {r['fused_points']:>7} fused points, {r['instances']:>4} instances, state "
                f"{r['state_mb']:6.2f} MB, RSS {r['current_rss_mb']:7.1f} MB (peak {r['peak_rss_mb']:7.1f}), {r['s']:7.1f} s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a run folder or checkpoint (default: an untrained --preset model)")
    parser.add_argument("--preset", default="demo-mv")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--loop", type=int, default=250, help="rendered views per pass around the room")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        write_recording(work / "recording", args.frames, args.loop)
        print(f"wrote {args.frames} + 1 frames ({args.loop} rendered views) in {time.perf_counter() - started:.0f} s")
        target = args.checkpoint or untrained_run(work / "run", args.preset, args.device)
        probe = StateProbe(args.every)
        settings = RecordingSettings(frames=work / "recording", out=work / "out", device=args.device)
        result = infer_recording(target, settings, reporter=probe)
        print(f"{result.frames} frames streamed ({result.skipped}), {result.instances} instances, {result.points} fused points")
        print(
            f"{result.ms_per_frame:.1f} ms/frame · peak RSS {result.peak_rss_mb:.0f} MB · online state {result.state_mb:.2f} MB"
        )
        for stage, ms in result.stage_ms.items():
            print(f"  {stage:<12} {ms:8.1f} ms/frame")
        first = next((r for r in probe.rows if r["frames"] >= args.loop), probe.rows[0])
        last = probe.rows[-1]
        cfg = restore_model(target, None, "cpu").cfg
        cap = voxel_cap(work / "recording", args.loop, tuple(cfg.data.image_size), cfg.eval.online.voxel)
        print(
            f"after the first pass ({first['frames']} frames) → {last['frames']} frames: fused points "
            f"{first['fused_points']} → {last['fused_points']} "
            f"({last['fused_points'] / first['fused_points'] - 1:+.1%}; voxel cap "
            f"{cap}: every usable depth pixel of the {args.loop} views), state {first['state_mb']} → {last['state_mb']} MB, "
            f"RSS {first['current_rss_mb']} → {last['current_rss_mb']} MB"
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "device": args.device,
                        "frames": result.frames,
                        "loop": args.loop,
                        "ms_per_frame": result.ms_per_frame,
                        "stage_ms_per_frame": result.stage_ms,
                        "peak_rss_mb": result.peak_rss_mb,
                        "state_mb": result.state_mb,
                        "instances": result.instances,
                        "fused_points": result.points,
                        "voxel_cap": cap,
                        "probe": probe.rows,
                    },
                    indent=1,
                )
            )


if __name__ == "__main__":
    main()
