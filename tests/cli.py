"""Run the real ``bifusion`` executable in a subprocess (what a user types)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIFUSION = Path(sys.executable).parent / "bifusion"


def run_cli(
    *args: str, cwd: Path | None = None, check: bool = True, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "TERM": "dumb", **(env or {})}
    proc = subprocess.run([str(BIFUSION), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bifusion {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
