"""What every figure module shares: the row it reports, its command line, a prepared data root.

A row is one line of the suite's table. ``ratio`` is the figure's dimensionless value (both sides
measured in one run); ``measured`` says what the two sides were, with units; ``target`` is the
issue's target as text and ``passed`` its verdict (None for report-only figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(REPO))


@dataclass
class Figure:
    id: str  # "P1", "P8b", ...
    figure: str  # what is measured, in words
    measured: str  # both sides with units, e.g. "41.2 vs 43.0 frames/s"
    ratio: Optional[float]  # the dimensionless figure compared with the target
    target: str  # e.g. "≥ 0.9", "≤ 2", "report"
    passed: Optional[bool]  # None: report only
    details: dict[str, Any] = field(default_factory=dict)  # raw numbers for results.json


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--json", type=Path, help="write the figure rows here")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--work", type=Path, help="scratch folder (default: a fresh temporary one)")
    p.add_argument("--quick", action="store_true", help="smallest sizes: checks the code path, not the figure")
    return p


def work_folder(args: argparse.Namespace, figure: str) -> Path:
    """``--work`` (the suite's shared scratch folder, so modules reuse each other's data), else a fresh one."""
    return args.work or Path(tempfile.mkdtemp(prefix=f"bifusion-{figure}-"))


def emit(figures: list[Figure], path: Optional[Path]) -> None:
    """Print each row (for a standalone run) and write them as JSON for the suite."""
    for f in figures:
        verdict = "report" if f.passed is None else ("pass" if f.passed else "FAIL")
        ratio = "" if f.ratio is None else f"{f.ratio:.3g}"
        print(f"{f.id:5s} {f.figure}: {f.measured}  ratio {ratio}  target {f.target}  {verdict}")
    if path:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps([asdict(f) for f in figures], indent=1))
        os.replace(tmp, path)


def synthetic_root(
    work: Path,
    scenes: int,
    frames: int,
    points: int,
    image_size: tuple[int, int],
    mode: str = "sv",
    depth_size: tuple[int, int] = (160, 120),
    color_size: tuple[int, int] = (324, 242),
) -> Path:
    """A prepared synthetic ScanNet root under ``work`` (reused when the same sizes exist)."""
    from bifusion_core.data.prepare.pipeline import prepare_scannet
    from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP, SyntheticOptions
    from bifusion_core.data.synthetic.write import write_synthetic_scannet

    root = work / (
        f"synthetic-{mode}-{scenes}x{frames}-{points}-{image_size[0]}x{image_size[1]}"
        f"-d{depth_size[0]}x{depth_size[1]}-c{color_size[0]}x{color_size[1]}"
    )
    if (root / ".ready").exists():
        return root
    options = SyntheticOptions(num_frames=frames, depth_size=depth_size, color_size=color_size)
    write_synthetic_scannet(root, scenes, seed=0, options=options)
    step = {"frame_step": SYNTHETIC_FRAME_STEP} if mode == "sv" else {"mv_frame_step": SYNTHETIC_FRAME_STEP}
    prepare_scannet(root, root, mode=mode, image_size=image_size, num_points=points, **step)
    (root / ".ready").touch()
    return root
