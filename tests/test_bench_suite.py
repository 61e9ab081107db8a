"""The suite runner: one process per figure module, a Rich table, results.json, a Markdown view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "bench" / "suite.py"


@pytest.mark.slow  # runs the P2 module for real (--quick: a 1-scene synthetic root, seconds of reads)
def test_suite_runs_a_module_and_writes_results(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--only", "P2", "--quick", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["errors"] == {} and result["quick"] is True and result["machine"]["cpus"] >= 1
    assert [f["id"] for f in result["figures"]] == ["P2a", "P2b"]
    assert all(f["ratio"] > 0 and isinstance(f["passed"], bool) for f in result["figures"])
    assert "P2a" in proc.stdout and "feature reads" in proc.stdout  # the Rich table


def test_markdown_view_of_results(tmp_path):
    out = tmp_path / "results.json"
    rows = [
        {
            "id": "P3",
            "figure": "step ratio",
            "measured": "12 vs 10 ms",
            "ratio": 1.2,
            "target": "≤ 1.3",
            "passed": True,
            "details": {},
        },
        {
            "id": "P8a",
            "figure": "peak memory",
            "measured": "684 MiB",
            "ratio": None,
            "target": "report",
            "passed": None,
            "details": {},
        },
        {
            "id": "P1",
            "figure": "throughput",
            "measured": "8 vs 10 frames/s",
            "ratio": 0.8,
            "target": "≥ 0.9",
            "passed": False,
            "details": {},
        },
    ]
    out.write_text(
        json.dumps(
            {
                "date": "2026-12-01T00:00:00+00:00",
                "device": "cpu",
                "seconds": 120.0,
                "machine": {"cpu": "Test CPU", "cpus": 2, "torch": "2.13"},
                "figures": rows,
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--markdown", "--out", str(out)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("Measured 2026-12-01 on Test CPU (2 CPUs") and "2.0 min" in lines[0]
    assert lines[4:] == [
        "| P3 | step ratio | 12 vs 10 ms | 1.2 | ≤ 1.3 | pass |",
        "| P8a | peak memory | 684 MiB |  | report | report |",
        "| P1 | throughput | 8 vs 10 frames/s | 0.8 | ≥ 0.9 | **fail** |",
    ]
