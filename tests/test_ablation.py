"""bench/ablation.py: mean ± std over seeds per variant, texture-only vs geometric means, JSON-ready, chart."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(variant, seed, pillow_iou, chair_ap):
    iou = {"pillow": pillow_iou, "towel": 0.2, "picture": 0.1, "whiteboard": 0.1, "poster": 0.1, "chair": 0.5, "wall": 0.9}
    ap50 = {"pillow": pillow_iou / 2, "towel": 0.1, "chair": chair_ap}  # wall classes without GT instances here
    summary = {"semantic/miou": 0.4, "instance/ap50": 0.3, "instance/ap50_class_agnostic": 0.6}
    return {"variant": variant, "seed": seed, "iou": iou, "ap50": ap50, "summary": summary}


def test_aggregate_means_and_stds_over_seeds(ablation, tmp_path, capsys):
    runs = [_run("3d", 0, 0.2, 0.6), _run("3d", 1, 0.4, 0.8), _run("lite", 0, 0.6, 0.7), _run("lite", 1, 0.8, 0.7)]
    table = ablation.aggregate(runs)
    assert list(table) == ["3d", "lite"]
    assert table["3d"]["iou/pillow"] == pytest.approx((0.3, 0.1))
    assert table["lite"]["ap50/pillow"] == pytest.approx((0.35, 0.05))
    assert table["3d"]["iou/texture mean"][0] == pytest.approx(np.mean([0.3, 0.2, 0.1, 0.1, 0.1]))
    assert table["3d"]["iou/geometric mean"] == pytest.approx((0.7, 0.0))  # chair and wall
    assert table["3d"]["ap50/geometric mean"] == pytest.approx((0.7, 0.1))
    assert np.isnan(table["3d"]["ap50/poster"][0])  # no GT instance in any run: absent, not 0
    ablation.print_table(table)
    assert "iou/pillow" in capsys.readouterr().out
    md = ablation.markdown_table(table).splitlines()
    assert md[0] == "| metric | 3d | lite |" and "| iou/pillow | 0.300 ± 0.100 | 0.700 ± 0.100 |" in md
    ablation.plot(table, tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_variants_differ_only_in_their_overrides(ablation):
    from bifusion_core.config import load_preset

    cfgs = {v: load_preset("demo", o) for v, o in ablation.VARIANTS.items()}
    assert not cfgs["3d"].model.use_2d and all(c.model.use_2d for v, c in cfgs.items() if v != "3d")
    assert [cfgs[v].model.fusion.gate for v in ("plain", "lite", "enhanced")] == ["plain", "lite", "enhanced"]
    assert cfgs["lite-l0"].clip.num_layers == 0 and cfgs["lite"].clip.num_layers == 2
