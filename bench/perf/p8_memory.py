"""P8a/P8b: peak memory of one ``prepare`` worker and one ``precompute-clip`` worker (report).

Each job runs alone in a fresh spawned process, the way a worker of either command runs, and
reports its peak resident set (``bifusion_core.measure.peak_rss_mb``). A second fresh process that only imports the same
modules gives the baseline (Python, torch, open_clip), so the row shows what the work itself
adds. Sizes are ScanNet's: 640x480 prepared images and 20k points per frame, from a synthetic
scan whose colour camera is 648x484 and depth camera 320x240; precompute uses the CLI's batch of
8 frames and the default 4 kept CLIP blocks, with the weights file the CLI resolves.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, emit, parser, work_folder  # noqa: E402


def _prepare(params: dict[str, Any]) -> None:
    from bifusion_core.data.prepare.pipeline import prepare_scannet
    from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP

    if params.get("baseline"):
        return
    prepare_scannet(
        params["raw"],
        params["out"],
        mode="sv",
        frame_step=SYNTHETIC_FRAME_STEP,
        image_size=params["image_size"],
        num_points=params["points"],
        workers=1,
    )


def _precompute(params: dict[str, Any]) -> None:
    import torch

    from bifusion_core.features.clip_encoder import _open_clip
    from bifusion_core.features.clip_precompute import precompute_clip_features

    _open_clip()  # the import every precompute worker pays
    if params.get("baseline"):
        return
    precompute_clip_features(
        params["out"],
        num_layers=params["layers"],
        weights=params["weights"],
        image_size=params["image_size"],
        batch_size=params["batch"],
        device=params["device"],
    )
    if params["device"].startswith("cuda"):
        params["cuda_peak"] = torch.cuda.max_memory_allocated()


def _child(job: str, params: dict[str, Any], results: Any) -> None:
    {"prepare": _prepare, "precompute": _precompute}[job](params)
    from bifusion_core.measure import peak_rss_mb

    results.put({"peak": int(peak_rss_mb() * 2**20), "cuda_peak": params.get("cuda_peak")})


def measure(job: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` in a fresh spawned process; its peak RSS (and CUDA peak when on a GPU)."""
    context = mp.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_child, args=(job, params, results))
    process.start()
    got = results.get()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{job} worker exited with {process.exitcode}")
    return got


def main() -> None:
    args = parser(__doc__).parse_args()
    work = work_folder(args, "p8")
    from bifusion_core.data.synthetic.room import SyntheticOptions
    from bifusion_core.data.synthetic.write import write_synthetic_scannet
    from bifusion_core.engine.builders import RANDOM_CLIP_SEED
    from bifusion_core.features.clip_encoder import cached_random_clip_weights

    if args.quick:
        frames, image_size, points, depth, color, layers, batch = 2, (224, 160), 2000, (160, 120), (324, 242), 1, 2
    else:
        frames, image_size, points, depth, color, layers, batch = 8, (640, 480), 20000, (320, 240), (648, 484), 4, 8
    raw = work / f"p8-raw-{frames}-d{depth[0]}x{depth[1]}-c{color[0]}x{color[1]}"
    if not (raw / ".ready").exists():
        write_synthetic_scannet(raw, 1, seed=0, options=SyntheticOptions(num_frames=frames, depth_size=depth, color_size=color))
        (raw / ".ready").touch()
    out = work / f"p8-prepared-{frames}-{image_size[0]}x{image_size[1]}-{points}"
    shutil.rmtree(out, ignore_errors=True)  # prepare and precompute skip what a previous run finished
    weights = str(cached_random_clip_weights(RANDOM_CLIP_SEED))
    common = {"out": str(out), "image_size": image_size}
    prep = {**common, "raw": str(raw), "points": points}
    clip = {**common, "layers": layers, "weights": weights, "batch": batch, "device": args.device}

    prepare_base = measure("prepare", {**prep, "baseline": True})
    prepare_peak = measure("prepare", prep)
    clip_base = measure("precompute", {**clip, "baseline": True})
    clip_peak = measure("precompute", clip)

    mib = 1 << 20

    def row(id_: str, what: str, peak: dict, base: dict, extra: dict) -> Figure:
        cuda = "" if peak["cuda_peak"] is None else f", CUDA {peak['cuda_peak'] / mib:.0f} MiB"
        return Figure(
            id_,
            what,
            f"{peak['peak'] / mib:.0f} MiB peak RSS ({base['peak'] / mib:.0f} MiB after imports){cuda}",
            None,
            "report",
            None,
            {
                "peak_rss_bytes": peak["peak"],
                "baseline_rss_bytes": base["peak"],
                "work_rss_bytes": peak["peak"] - base["peak"],
                "cuda_peak_bytes": peak["cuda_peak"],
                "image_size": list(image_size),
                **extra,
            },
        )

    figures = [
        row(
            "P8a",
            f"prepare: peak memory of one worker ({image_size[0]}x{image_size[1]}, {points // 1000}k points)",
            prepare_peak,
            prepare_base,
            {"points": points, "frames": frames},
        ),
        row(
            "P8b",
            f"precompute-clip: peak memory of one worker ({image_size[0]}x{image_size[1]}, batch {batch}, {layers} blocks)",
            clip_peak,
            clip_base,
            {"batch_size": batch, "num_layers": layers, "frames": frames, "device": args.device},
        ),
    ]
    emit(figures, args.json)


if __name__ == "__main__":
    main()
