"""MinkowskiEngine on CPU tensors: the same outputs and gradients from two builds of it.

``python scripts/me_parity.py --save out.pt`` runs a fixed set of MinkowskiEngine operations
(quantization, convolutions, transposed convolution, concatenation, pooling, pruning, interpolation,
union, features_at_coordinates) forward and backward on CPU tensors with fixed seeds and saves every result;
``--compare a.pt b.pt`` prints the largest difference per result (relative to the result's largest
value, at least 1) and fails above ``--tol``; the same build differs from run to run by ~1e-7.
`make cuda-wheel` runs it with the CPU build (.venv) and the CUDA build (its own venv).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def run(device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every result on the CPU, rows in coordinate order (the CUDA coordinate maps order rows otherwise)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bifusion_core.compat import import_minkowski

    ME = import_minkowski()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one summation order for both builds
    rng = np.random.default_rng(0)
    out: dict[str, torch.Tensor] = {}

    pts = rng.uniform(0, 3.0, (3000, 3)).astype(np.float32)
    batch = np.repeat([0, 1], 1500)[:, None]
    coords = torch.from_numpy(np.concatenate([batch, pts / 0.1], 1)).float()
    feats = torch.from_numpy(rng.normal(size=(3000, 4)).astype(np.float32))
    leaf = feats.to(device).requires_grad_(True)
    field = ME.TensorField(leaf, coords.to(device), quantization_mode=ME.SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE)
    x = field.sparse()

    def rows(t) -> tuple[torch.Tensor, torch.Tensor]:
        c = t.C.cpu().long()
        order = torch.argsort(((c[:, 0] * 1000 + c[:, 1] + 500) * 1000 + c[:, 2] + 500) * 1000 + c[:, 3] + 500)
        return c[order], t.F.detach().cpu()[order]

    out["quantized.C"], out["quantized.F"] = rows(x)

    conv = ME.MinkowskiConvolution(4, 8, kernel_size=3, stride=1, dimension=3)
    down = ME.MinkowskiConvolution(8, 16, kernel_size=2, stride=2, dimension=3)
    dw = ME.MinkowskiChannelwiseConvolution(16, kernel_size=3, dimension=3)
    up = ME.MinkowskiConvolutionTranspose(16, 8, kernel_size=2, stride=2, dimension=3)
    maxpool = ME.MinkowskiMaxPooling(kernel_size=2, stride=2, dimension=3)
    avgpool = ME.MinkowskiAvgPooling(kernel_size=3, stride=1, dimension=3)
    sumpool = ME.MinkowskiSumPooling(kernel_size=2, stride=2, dimension=3)
    # No global pooling nor broadcast (bifusion uses neither): in MinkowskiEngine 0.5.4 on CPU tensors
    # global max pooling returns uninitialised memory now and then and global average pooling's
    # backward corrupts the heap, the CPU build as much as the CUDA one.
    prune = ME.MinkowskiPruning()
    modules = {"conv": conv, "down": down, "dw": dw, "up": up}
    for m in modules.values():
        m.to(device)

    a = conv(x)
    b = down(a)
    c = dw(b)
    d = up(c)
    e = d + a  # same coordinate map after the transposed convolution
    f = ME.cat(a, d)
    g = maxpool(f)
    h = avgpool(g)
    s = sumpool(f)
    keep = h.F[:, 0] > 0
    p = prune(h, keep)
    u = ME.MinkowskiUnion()(
        ME.SparseTensor(s.F, coordinate_map_key=s.coordinate_map_key, coordinate_manager=s.coordinate_manager),
        ME.SparseTensor(g.F, coordinate_map_key=g.coordinate_map_key, coordinate_manager=g.coordinate_manager),
    )
    sliced = e.slice(field)  # interpolation back to the input points
    for name, t in {
        "conv": a,
        "down": b,
        "dw": c,
        "up": d,
        "cat": f,
        "maxpool": g,
        "avgpool": h,
        "sumpool": s,
        "prune": p,
        "union": u,
    }.items():
        out[f"{name}.C"], out[f"{name}.F"] = rows(t)
    at = e.features_at_coordinates(coords.to(device)[::7].contiguous())
    out["features_at_coordinates"] = at.detach().cpu()
    out["slice"] = sliced.F.detach().cpu()

    loss = sliced.F.pow(2).mean() + p.F.sum() * 1e-3 + u.F.mean() + at.abs().mean()
    loss.backward()
    out["grad.input"] = leaf.grad.cpu()
    for name, m in modules.items():
        out[f"grad.{name}.kernel"] = m.kernel.grad.cpu()
    out["cuda_build"] = torch.tensor([int(ME.is_cuda_available())])
    return out


def compare(a_path: Path, b_path: Path, tol: float) -> int:
    a, b = torch.load(a_path), torch.load(b_path)
    worst, bad = 0.0, []
    print(f"{'result':<24} {'shape':<12} max |a-b| / max(|a|, 1)")
    for key in sorted(set(a) | set(b)):
        if key == "cuda_build":
            continue
        if key not in a or key not in b or a[key].shape != b[key].shape:
            bad.append(key)
            print(f"{key:<24} missing or shapes differ")
            continue
        scale = max(a[key].double().abs().max().item(), 1.0) if a[key].numel() else 1.0
        diff = (a[key].double() - b[key].double()).abs().max().item() / scale if a[key].numel() else 0.0
        worst = max(worst, diff)
        print(f"{key:<24} {str(tuple(a[key].shape)):<12} {diff:.3g}")
        if diff > tol:
            bad.append(key)
    builds = f"cuda_build {int(a['cuda_build'])} vs {int(b['cuda_build'])}"
    print(
        f"{len(a) - 1} results, largest difference {worst:.3g} ({builds}); "
        + ("all within" if not bad else f"{len(bad)} above")
        + f" {tol:g}"
    )
    return 1 if bad else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--save", type=Path)
    p.add_argument("--compare", nargs=2, type=Path)
    p.add_argument("--tol", type=float, default=1e-5)
    args = p.parse_args()
    if args.save:
        torch.save(run(), args.save)
    if args.compare:
        sys.exit(compare(*args.compare, args.tol))


if __name__ == "__main__":
    main()
