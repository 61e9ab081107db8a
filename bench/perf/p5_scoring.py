"""P5: scoring a val set on mesh vertices in memory vs from the benchmark's text files.

P5: ``SceneScorer`` (bifusion's scene-level scoring: add each scan, then ``result``) against
``bench/reference_eval.py``, a plain re-implementation of ScanNet's file-based script (parse
every ``pred_mask`` file line by line, then per-GT overlap loops), on the same predictions
exported with ``export_scene``. Both give per-class and class-agnostic AP / AP50 / AP25 and
mIoU; the verdict asks ≥ 10× and the same numbers.

P5b: bifusion's own reader of an export folder (``export.read_ids`` /
``read_instance_predictions``: GT ids, instance predictions, semantic files) against the same
reader with ``read_ids`` as it was before the bulk parser (``splitlines`` + ``np.array``,
copied below as ``legacy_read_ids``), plus the AP of the re-read predictions.

Sizes: the issue's 300 scans × 150k vertices × 100 masks takes hours on the file-based side,
so 4 such scans (the ratio does not depend on the number of scans: both sides are linear in
it); ``--quick``: 2 scans × 20k vertices × 20 masks. Files are written first and read from a
warm page cache by both sides. Order: fast, slow, fast (the fast side's mean is used).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from common import Figure, emit, parser  # first: puts the repository on sys.path for bench.*

# isort: split
from bench.reference_eval import METRICS, evaluate_export
from bifusion_core.evaluation import export as export_io
from bifusion_core.evaluation.instance_ap import LABEL_DIVISOR
from bifusion_core.evaluation.scene_eval import ScenePrediction, SceneScorer, SceneTruth, export_scene
from mesh_scans import LABELS, mesh_scan

KEYS = METRICS
TOLERANCE = 1e-9  # the two sides sum the same terms in a different order


def legacy_read_ids(path) -> np.ndarray:
    """``export.read_ids`` before the bulk parser (its fast path: valid files), for P5b's "before"."""
    return np.array(Path(path).read_text().splitlines(), dtype=np.int64)


@contextmanager
def reader(read_ids):
    """Run the export reader with a given ``read_ids`` (the module-level function it calls)."""
    current = export_io.read_ids
    export_io.read_ids = read_ids
    try:
        yield
    finally:
        export_io.read_ids = current


def score_in_memory(scans: list[tuple[ScenePrediction, SceneTruth]]) -> tuple[float, dict]:
    start = time.perf_counter()
    scorer = SceneScorer(LABELS, "mesh-vertex")
    for pred, truth in scans:
        scorer.add(pred, truth)
    metrics = scorer.result()
    return time.perf_counter() - start, metrics


def score_files(folder: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    metrics = evaluate_export(folder, list(LABELS.raw_ids), list(LABELS.thing_raw_ids))
    return time.perf_counter() - start, metrics


def read_export(folder: Path, scenes: list[str]) -> tuple[float, list[tuple[ScenePrediction, SceneTruth]]]:
    """bifusion's reader over an export folder -> (seconds, the scans as read)."""
    start = time.perf_counter()
    scans = []
    for scene in scenes:
        gt_ids = export_io.read_ids(folder / export_io.INSTANCE_GT / f"{scene}.txt")
        masks, labels, scores = export_io.read_instance_predictions(folder / export_io.INSTANCE_PRED, scene, len(gt_ids))
        semantic = export_io.read_ids(folder / export_io.SEMANTIC_PRED / f"{scene}.txt")
        label_raw = export_io.read_ids(folder / export_io.SEMANTIC_GT / f"{scene}.txt")
        truth = SceneTruth(scene, label_raw, gt_ids % LABEL_DIVISOR)
        scans.append((ScenePrediction(scene, masks, labels, scores, semantic), truth))
    return time.perf_counter() - start, scans


def differences(a: dict, b: dict) -> dict[str, float]:
    """|a - b| per metric key (0 where both are NaN)."""
    out = {}
    for key in KEYS:
        x, y = float(a[key]), float(b[key])
        out[key] = 0.0 if (math.isnan(x) and math.isnan(y)) else abs(x - y)
    return out


def main() -> None:
    args = parser(__doc__).parse_args()
    num_scans, vertices, masks = (2, 20_000, 20) if args.quick else (4, 150_000, 100)
    work = Path(tempfile.mkdtemp(prefix="p5-", dir=args.work))
    try:
        scans = [mesh_scan(i, vertices, masks) for i in range(num_scans)]
        folder = work / "export"
        for pred, truth in scans:
            export_scene(folder, pred, truth)
        scenes = [pred.scene for pred, _ in scans]

        memory_a, ours = score_in_memory(scans)
        files_s, reference = score_files(folder)
        memory_b, _ = score_in_memory(scans)
        memory_s = (memory_a + memory_b) / 2

        after_a, reread = read_export(folder, scenes)
        with reader(legacy_read_ids):
            before_s, _ = read_export(folder, scenes)
        after_b, _ = read_export(folder, scenes)
        after_s = (after_a + after_b) / 2
        _, rescored = score_in_memory(reread)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    size = f"{num_scans} scans × {vertices // 1000}k vertices × {masks} masks"
    diff = differences(ours, reference)
    same = max(diff.values()) <= TOLERANCE
    speedup = files_s / memory_s
    reread_diff = differences(ours, rescored)
    reader_speedup = before_s / after_s
    figures = [
        Figure(
            "P5",
            f"mesh-vertex scoring speed-up, in memory vs file-based script ({size})",
            f"{memory_s:.2f} s vs {files_s:.1f} s; AP/AP50/AP25 {'identical' if same else 'DIFFER'}",
            speedup,
            "≥ 10×, same AP",
            speedup >= 10 and same,
            {
                "scans": num_scans,
                "vertices": vertices,
                "masks": masks,
                "in_memory_s": memory_s,
                "in_memory_runs_s": [memory_a, memory_b],
                "file_based_s": files_s,
                "max_abs_diff": max(diff.values()),
                "abs_diff": diff,
                "metrics": {k: ours[k] for k in KEYS},
            },
        ),
        Figure(
            "P5b",
            f"export reader speed-up, bulk parser vs before ({size})",
            f"{before_s:.2f} s vs {after_s:.2f} s; re-read AP {'identical' if max(reread_diff.values()) == 0 else 'DIFFERS'}",
            reader_speedup,
            "≥ 5×, same AP",
            reader_speedup >= 5 and max(reread_diff.values()) == 0,
            {
                "before_s": before_s,
                "after_s": after_s,
                "after_runs_s": [after_a, after_b],
                "reread_abs_diff": reread_diff,
                "files": num_scans * (masks + 4),
            },
        ),
    ]
    emit(figures, args.json)


if __name__ == "__main__":
    main()
