"""The training-step figure module (P3, P4, P7) runs end to end at its quick size and reports sound rows."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_step_module_quick(tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/perf/p3_train_step.py"), "--quick", "--json", str(out), "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["id"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"P3", "P4", "P7"}
    for r in rows.values():
        assert set(r) == {"id", "figure", "measured", "ratio", "target", "passed", "details"}
        assert isinstance(r["passed"], bool) and r["figure"] and r["measured"] and r["target"]
        assert math.isfinite(r["ratio"]) and r["ratio"] >= 0
    p3 = rows["P3"]["details"]
    assert p3["median_bifusion_ms"] > 0 and p3["median_only3d_ms"] > 0 and p3["ratio_of_fastest"] > 0
    pairs = sorted(f / d for f, d in zip(p3["bifusion_ms"], p3["only3d_ms"]))
    assert pairs[0] - 1e-3 <= rows["P3"]["ratio"] <= pairs[-1] + 1e-3  # the median pair (times rounded to 0.1 ms)
    windows = rows["P4"]["details"]["windows"]
    assert windows and all(0 <= w["data_wait_share"] < 1 and w["it/s"] > 0 for w in windows)
    p7 = rows["P7"]["details"]
    assert p7["non_logging_steps"] and p7["logging_steps"]
    # a logging step adds the one transfer of the logged figures to what every step reads
    assert min(p7["logging_steps"]) > max(p7["non_logging_steps"]) >= 1
    assert any(site.startswith("engine/trainer.py") for site in p7["sites_non_logging"])
    assert rows["P7"]["passed"] == (rows["P7"]["ratio"] <= 2)
