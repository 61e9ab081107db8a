"""The evaluation-side figure modules of the performance suite (P5, P5b, P6, P8c) run with --quick."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"id", "figure", "measured", "ratio", "target", "passed", "details"}


def run_module(module: str, tmp_path: Path) -> list[dict]:
    out = tmp_path / f"{module}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "perf" / f"{module}.py"), "--quick", "--json", str(out), "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    for row in rows:
        assert set(row) == FIELDS
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
        assert row["figure"] and row["measured"] and row["target"]
    return rows


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_p5_scoring_rows(tmp_path: Path):
    rows = {r["id"]: r for r in run_module("p5_scoring", tmp_path)}
    assert set(rows) == {"P5", "P5b"}
    p5, p5b = rows["P5"]["details"], rows["P5b"]["details"]
    assert positive(p5["in_memory_s"]) and positive(p5["file_based_s"])
    assert rows["P5"]["ratio"] == pytest.approx(p5["file_based_s"] / p5["in_memory_s"])
    # same predictions, two evaluators: the same benchmark numbers, and a non-trivial case
    assert p5["max_abs_diff"] <= 1e-9
    assert 0.05 < p5["metrics"]["instance/ap"] < 0.95 and 0.05 < p5["metrics"]["semantic/miou"] < 0.95
    assert positive(p5b["before_s"]) and positive(p5b["after_s"])
    assert max(p5b["reread_abs_diff"].values()) == 0.0  # the export reader gives back exactly what was written
    assert isinstance(rows["P5"]["passed"], bool) and isinstance(rows["P5b"]["passed"], bool)


@pytest.mark.slow
def test_p8_eval_memory_row(tmp_path: Path):
    (row,) = run_module("p8_eval_memory", tmp_path)
    assert row["id"] == "P8c"
    small, large = row["details"]["small"], row["details"]["large"]
    assert large["scans"] == 2 * small["scans"]
    assert positive(small["peak_rss_mb"]) and positive(large["peak_rss_mb"])
    assert large["state_mb"] > small["state_mb"] > 0  # the metric state grows with the scans
    assert small["ap"] == small["ap"] and large["ap"] == large["ap"]  # scored for real (not NaN)
    assert row["details"]["excess_mb"] == pytest.approx(
        (large["peak_rss_mb"] - small["peak_rss_mb"]) - (large["state_mb"] - small["state_mb"])
    )


@pytest.mark.slow
def test_p6_online_latency_row(tmp_path: Path):
    (row,) = run_module("p6_online_latency", tmp_path)
    details = row["details"]
    stages = details["ms_per_frame"]
    for stage in ("2d_features", "backbone3d", "decoder", "merge", "mesh_map"):
        assert positive(stages[stage]), stage
    assert details["ms_per_frame_total"] == pytest.approx(sum(stages.values()))
    assert row["ratio"] == pytest.approx((stages["merge"] + stages["mesh_map"]) / details["ms_per_frame_total"])
    assert details["instances"] > 0  # the merge is timed on real instances (untrained masks cut at 0.4)
    assert row["passed"] == (row["ratio"] <= 0.10)
