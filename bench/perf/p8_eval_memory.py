"""P8c: peak memory of scoring a val set on mesh vertices, and whether it grows with the scans.

Evaluation streams: each scan is scored as soon as its predictions exist (``SceneScorer.add``)
and dropped; only the metric state stays (per scan, the benchmark's prediction × GT match
tables; a confusion matrix). Two child processes score N and 2N synthetic scans
(``mesh_scans.mesh_scan``: 150k vertices × 100 predicted masks each) and report their peak RSS
and the scorer's state (``SceneScorer.state_arrays``). The verdict: the peak grows from N to
2N scans by the state's own growth, give or take 5 % of the peak at N. The model forward of
``bifusion eval`` is per scan too and is not part of this figure (P8a/P8b measure the stages
that hold a model). Sizes: N = 150 (2N = the issue's 300 scans); ``--quick``: 4 / 8 scans of
20k vertices × 20 masks. The two children run at the same time (memory, not speed, is measured).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import Figure, emit, parser

TOLERANCE = 0.05  # of the peak at N


def child(scans: int, vertices: int, masks: int) -> None:
    """Score ``scans`` scans one by one, then print peak RSS and state size as JSON."""
    from bifusion_core.evaluation.scene_eval import SceneScorer
    from bifusion_core.measure import peak_rss_mb
    from mesh_scans import LABELS, mesh_scan

    start = time.perf_counter()
    scorer = SceneScorer(LABELS, "mesh-vertex")
    for index in range(scans):
        pred, truth = mesh_scan(index, vertices, masks)
        scorer.add(pred, truth)
        del pred, truth
    metrics = scorer.result()
    state = sum(a.nbytes for a in scorer.state_arrays())
    print(
        json.dumps(
            {
                "scans": scans,
                "peak_rss_mb": peak_rss_mb(),
                "state_mb": state / (1 << 20),
                "seconds": time.perf_counter() - start,
                "ap": metrics["instance/ap"],
            }
        )
    )


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--child", type=int, nargs=3, metavar=("SCANS", "VERTICES", "MASKS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    n, vertices, masks = (4, 20_000, 20) if args.quick else (150, 150_000, 100)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", str(s), str(vertices), str(masks)], stdout=subprocess.PIPE, text=True
        )
        for s in (n, 2 * n)
    ]
    outs = [proc.communicate()[0] for proc in procs]
    for proc in procs:
        if proc.returncode != 0:
            raise SystemExit(f"p8_eval_memory: a scoring child exited with {proc.returncode}")
    small, large = (json.loads(out.strip().splitlines()[-1]) for out in outs)
    peak_growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    state_growth = large["state_mb"] - small["state_mb"]
    excess = peak_growth - state_growth
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    figure = Figure(
        "P8c",
        f"eval scoring peak RSS, {n} → {2 * n} scans ({vertices // 1000}k vertices × {masks} masks)",
        f"{small['peak_rss_mb']:.0f} → {large['peak_rss_mb']:.0f} MB; metric state {small['state_mb']:.1f} → "
        f"{large['state_mb']:.1f} MB; growth beyond it {excess:+.1f} MB",
        ratio,
        f"report; growth beyond state ≤ {TOLERANCE:.0%} of peak",
        excess <= TOLERANCE * small["peak_rss_mb"],
        {"small": small, "large": large, "peak_growth_mb": peak_growth, "state_growth_mb": state_growth, "excess_mb": excess},
    )
    emit([figure], args.json)


if __name__ == "__main__":
    main()
