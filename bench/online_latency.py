"""Online inference: ms per frame with its breakdown, and memory over a 2,000-frame stream.

Part 1 (latency): one synthetic scan prepared at ``--points`` points per frame (MV mode) is
streamed through the real online loop (forward, per-frame instances, merge) and mapped to its
mesh; ms per frame by stage: load (sample + collate), 2d_features (CLIP tokens, computed online
here, + 2D head), projection (points into the frames, depth test, sampling the 2D maps),
backbone3d (sparse U-Net + Tiny-SA), memory_adapter (when enabled), fusion (FiLM + gate),
decoder (superpoint pooling + query decoder), postprocess (top-k, NMS, merge cues), merge (voxel
map + Hungarian + votes), mesh_map (1-NN to the mesh + segment smoothing, per frame of the scan).

Part 2 (bounded memory): the model's outputs for the scan's frames are computed once, then a
``--long``-frame stream replays them with a random rigid jitter of the pose (±8° about z,
±0.25 m), i.e. a long recording that keeps re-observing one room. The merge, the voxel point
map and the instance memory run for real on every frame; the model forward is stateless per
frame here (no memory adapter), so its cost and memory do not change with the frame count and
are not repeated. Reported at 200 / 1000 / 2000 frames: peak and current RSS, accumulated
points, instances, bytes of online state, and what keeping every frame's points (ESAM) would hold.

Usage: python bench/online_latency.py [--checkpoint RUN] [--preset demo-mv] [--points 20000]
       [--device cpu|cuda] [--long 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP, SyntheticOptions
from bifusion_core.data.synthetic.write import write_synthetic_scannet
from bifusion_core.engine import builders
from bifusion_core.evaluation.scene_eval import load_mesh_truth
from bifusion_core.measure import current_rss_mb, peak_rss_mb
from bifusion_core.models.bifusion import build_model
from bifusion_core.online.merge import FrameInstances
from bifusion_core.online.predictions import mesh_vertices
from bifusion_core.online.segmenter import OnlineSegmenter, fold_stages, merge_frame, start_scan, state_mb
from bifusion_core.online.stream import ScanStream, mesh_truth_path, stream_manifest
from bifusion_core.online.timing import StageClock

CHECKPOINTS = (200, 1000, 2000)


def prepare(root: Path, points: int, frames: int, image_size: tuple[int, int]) -> None:
    write_synthetic_scannet(root, 1, seed=0, options=SyntheticOptions(num_frames=frames))
    prepare_scannet(root, root, mode="mv", mv_frame_step=SYNTHETIC_FRAME_STEP, image_size=image_size, num_points=points)


def load_model(args, root: Path):
    if args.checkpoint:
        from bifusion_core.runs.restore import restore_model

        restored = restore_model(args.checkpoint, root, args.device)
        return restored.cfg, restored.model, restored.labels, restored.device
    cfg = load_preset(args.preset, [f"data.root={root}", "clip.use_precomputed=false", f"train.device={args.device}"])
    labels = LABEL_SETS[cfg.data.benchmark]
    torch.manual_seed(0)
    model = build_model(cfg, labels).to(builders.pick_device(cfg)).eval()
    return cfg, model, labels, builders.pick_device(cfg)


def latency(cfg, model, labels, device, root: Path, replay_cache: bool = True) -> tuple[dict, list]:
    """Stage breakdown of one scan; ``replay_cache``: also each frame's outputs for ``long_stream``."""
    manifest = stream_manifest(root)
    scene = manifest["samples"][0]["scene"]
    stream = ScanStream.open(root, scene, labels, cfg.data.voxel_size, builders.clip_source(cfg, root), 1, manifest)
    _, mesh = load_mesh_truth(mesh_truth_path(root, manifest, scene), labels)
    segmenter = OnlineSegmenter(model, cfg, labels, device)
    segmenter.run(
        ScanStream(stream.data_root, scene, stream.records[:1], labels, cfg.data.voxel_size, stream.clip_source)
    )  # warm-up
    clock = StageClock(device)
    result = segmenter.run(stream, clock=clock)
    with clock.measure("mesh_map"):
        mesh_vertices(result, labels, mesh, smoothing=True, radius=cfg.eval.online.map_radius)
    stages = fold_stages(clock, result.frames)
    # cache each frame's instances and points for the long replay
    cache = []
    with torch.no_grad():
        for record in stream.records if replay_cache else []:
            batch = stream.batch(record).to(device)
            out = model(batch)
            pred, _, inst = segmenter.frame_objects(out, batch)
            conf = out.semantic_logits.softmax(-1).amax(-1).cpu().numpy()
            cache.append((batch.points.cpu().numpy(), pred.semantic, conf, inst))
    return {
        "scene": scene,
        "frames": result.frames,
        "points_per_frame": int(len(cache[0][0])) if cache else None,
        "mesh_vertices": int(len(mesh.vertices)),
        "ms_per_frame_total": sum(stages.values()),
        "ms_per_frame": stages,
        "cues": result.cues,
        "instances": int(len(result.scores)),
        "peak_rss_mb": peak_rss_mb(),
    }, cache


def jitter(rng: np.random.Generator, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    theta = np.deg2rad(rng.uniform(-8, 8))
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)
    shift = np.r_[rng.uniform(-0.25, 0.25, 2), 0].astype(np.float32)
    return rot, centre - centre @ rot.T + shift  # rotate about the room centre, then shift


def moved(inst: FrameInstances, rot: np.ndarray, offset: np.ndarray) -> FrameInstances:
    boxes = inst.boxes.copy()
    boxes[:, :3] = boxes[:, :3] @ rot.T + offset
    return FrameInstances(inst.masks, inst.labels, inst.scores, inst.embed, boxes, inst.class_prob)


def long_stream(cfg, cache: list, frames: int) -> list[dict]:
    point_map, memory = start_scan(cfg.eval.online)
    centre = np.concatenate([c[0] for c in cache]).mean(0).astype(np.float32)
    rng = np.random.default_rng(0)
    rows_out, raw_points, started = [], 0, time.perf_counter()
    for i in range(1, frames + 1):
        points, semantic, conf, inst = cache[(i - 1) % len(cache)]
        rot, offset = jitter(rng, centre)
        merge_frame(point_map, memory, moved(inst, rot, offset), points @ rot.T + offset, semantic, conf)
        raw_points += len(points)
        if i in CHECKPOINTS or i == frames:
            rows_out.append(
                {
                    "frames": i,
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                    "current_rss_mb": round(current_rss_mb(), 1),
                    "accumulated_points": point_map.size,
                    "instances": memory.num,
                    "online_state_mb": round(state_mb(point_map, memory), 2),
                    "all_frame_points": raw_points,
                    # ESAM keeps every frame's xyz+rgb (6 float32) and each instance's mask over all of them
                    "esam_like_state_mb": round(raw_points * (24 + memory.num) / (1 << 20), 1),
                    "ms_per_frame_merge": round(1000 * (time.perf_counter() - started) / i, 2),
                }
            )
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a run folder or checkpoint (default: an untrained --preset model)")
    parser.add_argument("--preset", default="demo-mv")
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--frames", type=int, default=8, help="frames of the synthetic scan")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--long", type=int, default=2000)
    parser.add_argument("--data", type=Path, help="reuse a data root prepared by an earlier run of this script")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp)
        cfg, model, labels, device = load_model(args, root)
        if not (root / "mv" / "manifest.json").is_file():
            prepare(root, args.points, args.frames, tuple(cfg.data.image_size))
        lat, cache = latency(cfg, model, labels, device, root)
        print(
            f"latency · {args.device} · {lat['points_per_frame']} points/frame · "
            f"{lat['frames']} frames · merge cues: {lat['cues']}"
        )
        for stage, ms in lat["ms_per_frame"].items():
            print(f"  {stage:<12} {ms:8.1f} ms/frame")
        print(f"  {'total':<12} {lat['ms_per_frame_total']:8.1f} ms/frame · peak RSS {lat['peak_rss_mb']:.0f} MB")
        rows = long_stream(cfg, cache, args.long)
        print(
            f"bounded memory · {args.long}-frame replay "
            f"(voxel {cfg.eval.online.voxel} m, max_instances {cfg.eval.online.max_instances})"
        )
        for r in rows:
            print(
                f"  {r['frames']:>5} frames: peak RSS {r['peak_rss_mb']:7.1f} MB, current {r['current_rss_mb']:7.1f} MB, "
                f"{r['accumulated_points']:>7} points, {r['instances']:>4} instances, state {r['online_state_mb']:6.2f} MB "
                f"(all frame points {r['all_frame_points']:,}: ESAM-like ≈ {r['esam_like_state_mb']:,.0f} MB), "
                f"merge {r['ms_per_frame_merge']:.1f} ms/frame"
            )
        if args.json:
            args.json.write_text(json.dumps({"latency": lat, "long": rows, "device": args.device}, indent=1))


if __name__ == "__main__":
    main()
