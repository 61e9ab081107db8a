"""The GPU check (scripts/gpu_check.sh): bifusion's CUDA path on one machine with a GPU, one table.

Checks, each timed and each failing on its own:
  environment      the GPU, torch, and a MinkowskiEngine built with CUDA
  ME CUDA = CPU    scripts/me_parity.py's operations on cuda against the same on the CPU
  preset P         every preset's model, forward + loss + backward on cuda, fp32, against the CPU
  bf16 autocast    the demo model under bf16 autocast: the sparse U-Net stays fp32, loss and
                   gradients finite and near fp32's
  train (CLI)      `bifusion train` on synthetic scenes, cuda, train.amp=bf16
  online (CLI)     `bifusion infer --device cuda`: one scan streamed, merged and mapped
  DDP NCCL         `bifusion train --gpus 2` (only where 2 GPUs are visible)
  P1 / P3 / P6     bench/suite.py --device cuda (CLIP images/s vs ~1.6k on an RTX 3090; BiFusion ÷
                   3D-only step time; online ms/frame vs ESAM's 80 ms)

Writes DIR/gpu_check.json and DIR/gpu_check.md (the table, for the README). Usage:
python scripts/gpu_check.py [--out DIR] [--skip-bench] [--bench-quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

ROWS: list[dict] = []
# BIFUSION_GPU_CHECK_DEVICE=cpu runs the same script on a machine without a GPU (to test the script itself)
DEVICE = os.environ.get("BIFUSION_GPU_CHECK_DEVICE", "cuda")
TINY_TRAIN = [
    "model.backbone3d.arch=MinkUNetTiny",
    "data.num_workers=2",
    "train.log_every=5",
    "train.eval_every=100000",
    "train.checkpoint_every=100000",
    f"train.device={DEVICE}",
]


def row(name: str, ok: bool | None, seconds: float, detail: str) -> None:
    ROWS.append({"check": name, "ok": ok, "seconds": round(seconds, 1), "detail": detail})
    mark = {True: "pass", False: "FAIL", None: "skip"}[ok]
    print(f"[gpu-check] {name}: {mark} ({seconds:.1f} s) {detail}", flush=True)


def check(name: str, named_by_arg: bool = False):
    def wrap(fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                ok, detail = fn(*args, **kwargs)
            except Exception as exc:  # every check reports; none stops the others
                ok, detail = False, f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]
                traceback.print_exc()
            row(f"{name} {args[0]}" if named_by_arg else name, ok, time.perf_counter() - start, detail)
            return ok

        return run

    return wrap


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bifusion_cli", *args]
    print("[gpu-check] $", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
    return proc


@check("environment")
def environment() -> tuple[bool, str]:
    from bifusion_core.compat import import_minkowski

    ME = import_minkowski()
    if DEVICE == "cpu":
        return (
            True,
            f"BIFUSION_GPU_CHECK_DEVICE=cpu: the script on the CPU; MinkowskiEngine built with CUDA: {ME.is_cuda_available()}",
        )
    if not torch.cuda.is_available():
        return False, "torch sees no GPU"
    p = torch.cuda.get_device_properties(0)
    detail = (
        f"{torch.cuda.device_count()}× {p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB); "
        f"torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}; MinkowskiEngine {ME.__version__} CUDA {ME.cuda_version()} "
        f"(built with CUDA: {ME.is_cuda_available()})"
    )
    return bool(ME.is_cuda_available()), detail


@check("ME CUDA = CPU")
def me_parity() -> tuple[bool, str]:
    import me_parity as mp

    cpu, gpu = mp.run("cpu"), mp.run(DEVICE)
    worst, worst_key, bad = 0.0, "", []
    for key in cpu:
        if key == "cuda_build":
            continue
        if cpu[key].shape != gpu[key].shape:
            bad.append(f"{key} shape {tuple(cpu[key].shape)} vs {tuple(gpu[key].shape)}")
            continue
        scale = max(cpu[key].double().abs().max().item(), 1.0) if cpu[key].numel() else 1.0
        diff = (cpu[key].double() - gpu[key].double()).abs().max().item() / scale if cpu[key].numel() else 0.0
        if diff > worst:
            worst, worst_key = diff, key
        if diff > 1e-4:
            bad.append(f"{key} {diff:.2g}")
    return not bad, f"{len(cpu) - 1} results; largest relative difference {worst:.2g} ({worst_key})" + (
        f"; above 1e-4: {', '.join(bad[:4])}" if bad else ""
    )


def _loss_and_grads(cfg, labels, device: str, seed: int = 0, amp: torch.dtype | None = None):
    from bifusion_core.data.loading.random_batch import random_batch
    from bifusion_core.losses.criterion import Criterion
    from bifusion_core.models.bifusion import build_model

    torch.manual_seed(seed)
    model = build_model(cfg, labels).to(device).train()
    batch = random_batch(cfg, labels, num_points=600).to(device)
    with torch.autocast(device.split(":")[0], dtype=amp or torch.float32, enabled=amp is not None):
        out = model(batch)
        loss, _ = Criterion(cfg.loss, labels.num_instance)(out, batch)
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach().float().cpu(), grads, model


@check("preset", named_by_arg=True)
def preset_forward_backward(name: str) -> tuple[bool, str]:
    from bifusion_core.config import load_preset
    from bifusion_core.engine.builders import label_set

    cfg = load_preset(name, ["model.fusion.warmup_iters=0"])
    labels = label_set(cfg)
    loss_gpu, grads_gpu, _ = _loss_and_grads(cfg, labels, DEVICE)
    loss_cpu, grads_cpu, _ = _loss_and_grads(cfg, labels, "cpu")
    finite = torch.isfinite(loss_gpu).item() and all(torch.isfinite(g).all() for g in grads_gpu.values())
    rel = (abs(loss_gpu - loss_cpu) / loss_cpu.abs().clamp(min=1e-6)).item()
    common = [k for k in grads_cpu if k in grads_gpu]
    gdiff = max(((grads_gpu[k] - grads_cpu[k]).norm() / grads_cpu[k].norm().clamp(min=1e-12)).item() for k in common)
    ok = finite and rel < 1e-3 and len(common) == len(grads_cpu)
    return ok, (
        f"loss cuda {loss_gpu.item():.5f} vs cpu {loss_cpu.item():.5f} (rel {rel:.1e}); "
        f"{len(common)} gradients, worst rel {gdiff:.1e}"
    )


@check("bf16 autocast")
def bf16_autocast() -> tuple[bool, str]:
    from bifusion_core.config import load_preset
    from bifusion_core.engine.builders import label_set
    from bifusion_core.models import backbone3d

    cfg = load_preset("demo", ["model.fusion.warmup_iters=0"])
    labels = label_set(cfg)
    dtypes: list[torch.dtype] = []
    original = backbone3d.Backbone3D.forward

    def spy(self, coords, feats):
        out = original(self, coords, feats)
        dtypes.append(out.dtype)
        return out

    backbone3d.Backbone3D.forward = spy
    try:
        loss_bf16, grads, _ = _loss_and_grads(cfg, labels, DEVICE, amp=torch.bfloat16)
    finally:
        backbone3d.Backbone3D.forward = original
    loss_fp32, _, _ = _loss_and_grads(cfg, labels, DEVICE)
    finite = torch.isfinite(loss_bf16).item() and all(torch.isfinite(g).all() for g in grads.values())
    rel = (abs(loss_bf16 - loss_fp32) / loss_fp32.abs()).item()
    ok = finite and dtypes and all(d == torch.float32 for d in dtypes) and rel < 0.05
    return ok, (
        f"sparse U-Net output {', '.join(sorted({str(d) for d in dtypes})) or 'not called'}; "
        f"loss bf16 {loss_bf16.item():.4f} vs fp32 {loss_fp32.item():.4f} (rel {rel:.1e})"
    )


def train_demo(data: Path, out: Path, iters: int, extra: list[str], *launch: str, timeout: int) -> Path:
    """``bifusion train --preset demo`` at the tiny settings; returns its run folder."""
    cli(
        "train",
        "--preset",
        "demo",
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--max-iters",
        str(iters),
        *launch,
        *[a for o in [*TINY_TRAIN, *extra] for a in ("--set", o)],
        timeout=timeout,
    )
    return max((out / "demo").iterdir(), key=lambda p: p.stat().st_mtime)


@check("train (CLI, bf16)")
def train_cli(data: Path, out: Path, iters: int) -> tuple[bool, str]:
    run = train_demo(data, out, iters, ["train.amp=bf16"], timeout=420)
    log = (run / "train.log").read_text()
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("loss/total")]
    last = rows[-1] if rows else {}
    ok = (
        "amp bf16" in log
        and (run / "checkpoints" / "last.pt").is_file()
        and bool(last)
        and math.isfinite(float(last["loss/total"]))
    )
    return ok, (
        f"{iters} iterations on {DEVICE} (bf16 noted in train.log: {'amp bf16' in log}); last logged: "
        f"{float(last.get('it/s', 'nan')):.2f} it/s, loss {float(last.get('loss/total', 'nan')):.3f}; run {run.name}"
    )


@check("online (CLI)")
def online_cli(data: Path, out: Path) -> tuple[bool, str]:
    run = max((out / "demo").iterdir(), key=lambda p: p.stat().st_mtime)
    manifest = json.loads((data / "mv" / "manifest.json").read_text())
    scenes = [s["scene"] for s in manifest["scenes"] if s["split"] != "val"] + [
        s["scene"] for s in manifest["scenes"] if s["split"] == "val"
    ]
    if not scenes:
        return False, f"no scan in {data / 'mv' / 'manifest.json'}"
    cli("infer", str(run), "--scene", scenes[-1], "--data", str(data), "--device", DEVICE, "--out", str(out / "online"))
    result = json.loads((out / "online" / f"{scenes[-1]}.json").read_text())
    return True, (
        f"{scenes[-1]} streamed on {DEVICE}: {result.get('frames')} frames, {result.get('instances')} instances, "
        f"{result.get('ms/frame')} ms/frame (untrained-ish 40-iteration model; bench P6 times the online path)"
    )


@check("DDP NCCL (2 GPUs)")
def ddp_cli(data: Path, out: Path) -> tuple[bool | None, str]:
    if DEVICE != "cuda" or torch.cuda.device_count() < 2:
        return None, f"{torch.cuda.device_count()} GPU visible: needs 2"
    run = train_demo(data, out / "ddp", 10, [], "--gpus", "2", timeout=300)
    log = (run / "train.log").read_text()
    ranks = "× 2 ranks" in log
    return (
        run / "checkpoints" / "last.pt"
    ).is_file() and ranks, f"10 iterations, torchrun with 2 processes over NCCL; train.log says 2 ranks: {ranks}"


def bench(out: Path, quick: bool) -> None:
    start = time.perf_counter()
    result_path = out / "bench-cuda.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "suite.py"),
        "--device",
        DEVICE,
        "--only",
        "P1",
        "P3",
        "P6",
        "--out",
        str(result_path),
    ] + (["--quick"] if quick else [])
    print("[gpu-check] $", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, text=True, timeout=420)
    if not result_path.is_file():
        row("bench P1/P3/P6", False, time.perf_counter() - start, f"bench/suite.py exit {proc.returncode}, no results")
        return
    result = json.loads(result_path.read_text())
    for f in result["figures"]:
        ratio = "" if f["ratio"] is None else f", ratio {f['ratio']:.3g}"
        row(f"{f['id']} {f['figure']}", f["passed"], 0.0, f"{f['measured']}{ratio} (target {f['target']})")
    for module, error in result.get("errors", {}).items():
        row(f"bench {module}", False, result["module_seconds"].get(module, 0.0), error)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--bench-quick", action="store_true", help="bench/suite.py --quick: every path, figures not meaningful")
    p.add_argument("--presets", nargs="*", help="presets to run (default: all)")
    p.add_argument("--train-iters", type=int, default=40)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # CPU references are compared in full fp32: no TF32 on the GPU side either
    torch.backends.cuda.matmul.allow_tf32 = False  # the default, said for the reader
    torch.backends.cudnn.allow_tf32 = False

    from bifusion_core.config.loader import available_presets

    if environment():
        me_parity()
        for name in args.presets if args.presets is not None else available_presets():
            preset_forward_backward(name)
        bf16_autocast()
        data, runs = args.out / "data", args.out / "runs"
        try:
            if not (data / "mv" / "manifest.json").is_file():
                cli(
                    "prepare",
                    "--synthetic",
                    "6",
                    "--out",
                    str(data),
                    "--preset",
                    "demo",
                    "--mode",
                    "both",
                    "--seed",
                    "0",
                    timeout=300,
                )
                cli("precompute-clip", "--preset", "demo", "--data", str(data), "--device", DEVICE, timeout=300)
            data_ok = True
        except Exception as exc:
            row("synthetic data", False, 0.0, str(exc)[:300])
            data_ok = False
        if data_ok and train_cli(data, runs, args.train_iters):
            online_cli(data, runs)
        if data_ok:
            ddp_cli(data, runs)
        if not args.skip_bench:
            bench(args.out, args.bench_quick)
    total = time.perf_counter() - start
    report(args.out, total)
    sys.exit(0 if all(r["ok"] is not False for r in ROWS) else 1)


def report(out: Path, total: float) -> None:
    from rich.console import Console
    from rich.table import Table

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    title = f"bifusion GPU check · {gpu} · {total / 60:.1f} min"
    table = Table(title=title)
    for col in ("check", "result", "s", "detail"):
        table.add_column(col, overflow="fold")
    for r in ROWS:
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[dim]skip[/]"}[r["ok"]]
        table.add_row(r["check"], mark, f"{r['seconds']:.0f}", r["detail"])
    Console(width=160).print(table)
    lines = [f"{title} ({datetime.now(timezone.utc).date()})", "", "| check | result | s | detail |", "|---|---|---|---|"]
    lines += [
        f"| {r['check']} | {({True: 'pass', False: '**fail**', None: 'skip'})[r['ok']]} | {r['seconds']:.0f} | {r['detail']} |"
        for r in ROWS
    ]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    (out / "gpu_check.json").write_text(
        json.dumps(
            {
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "gpu": gpu,
                "torch": torch.__version__,
                "seconds": round(total, 1),
                "rows": ROWS,
            },
            indent=1,
        )
    )
    print(f"[gpu-check] wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
