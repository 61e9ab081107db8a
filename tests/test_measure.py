"""Peak memory as the bench's spawned workers and the CLI report it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from bifusion_core.measure import peak_rss_mb

CHILD = "from bifusion_core.measure import peak_rss_mb; print(peak_rss_mb())"


def test_a_started_process_reports_its_own_peak_not_its_parents():
    """A worker started from a large process (bench P8's spawned prepare / precompute workers)
    must not report the parent's resident set: the kernel's ru_maxrss keeps it through exec."""
    held = np.ones(512 * 2**20 // 8)  # 512 MiB resident in this process
    held[:: 4096 // 8] = 2.0  # touch every page
    child_peak = float(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout)
    assert peak_rss_mb() >= 512
    assert child_peak < 256, f"the child reports {child_peak:.0f} MiB: its parent's size, not its own"
    del held
