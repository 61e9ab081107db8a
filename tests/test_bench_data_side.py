"""The performance suite's P1, P2 and P8a/b modules, run with ``--quick`` as the suite runs them
(their own process, JSON rows out): every row complete, every measured number positive and finite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIELDS = {"id", "figure", "measured", "ratio", "target", "passed", "details"}


def _run(module: str, work: Path) -> list[dict]:
    out = work / f"{module}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "perf" / f"{module}.py"),
            "--quick",
            "--device",
            "cpu",
            "--work",
            str(work),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    for row in rows:
        assert set(row) == FIELDS
        assert row["measured"] and row["figure"] and row["target"]
    return rows


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")  # shared: P2 reuses the synthetic root P1 prepared


@pytest.mark.slow
def test_p1_and_p2_quick_rows(work: Path) -> None:
    (p1,) = _run("p1_clip_throughput", work)
    assert p1["id"] == "P1" and _positive(p1["ratio"]) and p1["passed"] == (p1["ratio"] >= 0.9)
    d = p1["details"]
    assert _positive(d["bare_fps"]) and _positive(d["precompute_fps"]) and d["frames"] > 0
    assert math.isclose(p1["ratio"], d["precompute_fps"] / d["bare_fps"], rel_tol=1e-9)
    assert all(_positive(s) for s in d["bare_seconds"] + d["precompute_seconds"])

    warm, cold = _run("p2_feature_reads", work)
    assert (warm["id"], cold["id"]) == ("P2a", "P2b")
    fps = warm["details"]["frames_per_s"]
    assert set(fps) == {"hdf5_warm", "pt_warm", "hdf5_cold", "pt_cold"} and all(_positive(v) for v in fps.values())
    assert math.isclose(warm["ratio"], fps["hdf5_warm"] / fps["pt_warm"], rel_tol=1e-9)
    assert math.isclose(cold["ratio"], fps["hdf5_cold"] / fps["pt_cold"], rel_tol=1e-9)
    assert warm["passed"] == (warm["ratio"] >= 1.0) and cold["passed"] == (cold["ratio"] >= 2.0)


@pytest.mark.slow
def test_p8_quick_rows(work: Path) -> None:
    prepare, precompute = _run("p8_memory", work)
    assert (prepare["id"], precompute["id"]) == ("P8a", "P8b")
    for row in (prepare, precompute):
        assert row["ratio"] is None and row["passed"] is None and row["target"] == "report"
        d = row["details"]
        assert _positive(d["peak_rss_bytes"]) and _positive(d["baseline_rss_bytes"])
        assert d["peak_rss_bytes"] >= d["baseline_rss_bytes"]  # the work only adds to what the imports hold
    # the ViT's weights and activations: a precompute worker holds more than a bare import of it
    assert precompute["details"]["work_rss_bytes"] > 0
