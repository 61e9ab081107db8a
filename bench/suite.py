"""`make bench`: the performance suite P1–P8 as one Rich table and ``bench/results.json``.

Every figure is a ratio of two things measured side by side in the same process (these machines
are noisy); each figure module runs in its own process, one after another, so no two share the
cores or the page cache. Usage: python bench/suite.py [--device cpu|cuda] [--only P1 P5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
# (figure ids, module): each module measures the figures named with it
MODULES = [
    (("P1",), "p1_clip_throughput"),
    (("P2",), "p2_feature_reads"),
    (("P3", "P4", "P7"), "p3_train_step"),
    (("P5",), "p5_scoring"),
    (("P6",), "p6_online_latency"),
    (("P8",), "p8_memory"),
    (("P8",), "p8_eval_memory"),
]


def machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_module(module: str, device: str, work: Path, quick: bool, console: Console) -> tuple[list[dict], float, str]:
    out = work / f"{module}.json"
    cmd = [sys.executable, str(BENCH / "perf" / f"{module}.py"), "--json", str(out), "--device", device, "--work", str(work)] + (
        ["--quick"] if quick else []
    )
    start = time.perf_counter()
    with console.status(f"[bold]{module}[/] …"):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return [], seconds, f"exit {proc.returncode}: {tail[0]}"
    return json.loads(out.read_text()), seconds, ""


def render(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for col, just in (
        ("#", "left"),
        ("figure", "left"),
        ("measured", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("", "left"),
    ):
        table.add_column(col, justify=just)
    for r in rows:
        verdict = "[dim]report[/]" if r["passed"] is None else ("[green]pass[/]" if r["passed"] else "[red]FAIL[/]")
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}"
        table.add_row(r["id"], r["figure"], r["measured"], ratio, r["target"], verdict)
    return table


def markdown(result: dict) -> str:
    """The table of a results.json for bench/README.md, with the machine it ran on."""
    m = result["machine"]
    lines = [
        f"Measured {result['date'][:10]} on {m.get('gpu') or m['cpu']} ({m['cpus']} CPUs, torch {m['torch']}, "
        f"device {result['device']}); the whole suite took {result['seconds'] / 60:.1f} min.",
        "",
        "| # | figure | measured | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["figures"]:
        verdict = "report" if r["passed"] is None else ("pass" if r["passed"] else "**fail**")
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}"
        lines.append(f"| {r['id']} | {r['figure']} | {r['measured']} | {ratio} | {r['target']} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--only", nargs="+", help="figure ids to run (P1 … P8)")
    p.add_argument("--quick", action="store_true", help="smallest sizes: checks every path, figures not meaningful")
    p.add_argument("--out", type=Path, default=BENCH / "results.json")
    p.add_argument("--markdown", action="store_true", help="print the table of --out as Markdown (runs nothing)")
    args = p.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return
    console = Console()
    rows, errors, timings = [], {}, {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bifusion-bench-") as tmp:
        for ids, module in MODULES:
            if args.only and not set(ids) & {i.upper() for i in args.only}:
                continue
            got, seconds, error = run_module(module, args.device, Path(tmp), args.quick, console)
            timings[module] = round(seconds, 1)
            rows += got
            if error:
                errors[module] = error
                console.print(f"[red]{module}[/]: {error}")
    total = time.perf_counter() - start
    title = f"bifusion performance ({args.device}{', quick' if args.quick else ''}) — {total / 60:.1f} min"
    console.print(render(rows, title))
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "quick": args.quick,
        "machine": machine(),
        "seconds": round(total, 1),
        "module_seconds": timings,
        "errors": errors,
        "figures": rows,
    }
    if not args.quick or args.out != BENCH / "results.json":
        tmp_out = args.out.with_name(args.out.name + ".tmp")
        tmp_out.write_text(json.dumps(result, indent=1))
        os.replace(tmp_out, args.out)
        console.print(f"wrote {args.out}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
