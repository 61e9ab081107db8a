"""`prepare` for real data: real-data default settings, the official split lists, and the
byte-reproducible random CLIP init kept in the user cache (issue 7, items 5-7)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import tomllib

from bifusion_core.cache import CACHE_ENV, user_cache_dir
from bifusion_core.config import load_preset
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.prepare.settings import (
    MV_FRAME_STEP,
    REAL_DATA_PRESET,
    SYNTHETIC_PRESET,
    parse_image_size,
    resolve_prepare_settings,
)
from bifusion_core.data.raw.split_lists import PACKAGE_SOURCE, SPLITS, official_split_lists
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP
from bifusion_core.errors import BifusionError
from bifusion_core.features.clip_encoder import cached_random_clip_weights, save_random_clip_weights, weights_digest
from bifusion_core.features.clip_store import feature_tag
from bifusion_core.reporting import RecordingReporter
from cli import run_cli

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(frame_step=100, image_size=(64, 48), num_points=64)  # raw frames 0 and 100 of a synthetic scan


def _copy_scene_as(data: Path, dst: Path, name: str, source: str = "scene0000_00") -> None:
    """A synthetic scan under another scene name (every file named after the scene renamed too)."""
    target = dst / "scans" / name
    shutil.copytree(data / "scans" / source, target)
    for path in list(target.iterdir()):
        if path.name.startswith(source):
            path.rename(target / (name + path.name[len(source) :]))
    shutil.copy(data / "scannetv2-labels.combined.tsv", dst / "scannetv2-labels.combined.tsv")


def _manifest(out: Path, mode: str = "sv") -> dict:
    return json.loads((out / mode / "manifest.json").read_text())


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ----------------------------------------------------------------------------- item 5: default settings


def _preset_settings(name: str) -> tuple:
    data = load_preset(name).data
    return (name, data.mode, data.frame_step, tuple(data.image_size), data.num_points)


def test_scannet_defaults_to_the_real_data_preset_family() -> None:
    """Real scans take the real-data preset's settings, synthetic ones the demo's (values read from the presets)."""
    real = resolve_prepare_settings(synthetic=False)
    assert (real.preset, real.mode, real.frame_step, real.image_size, real.num_points) == _preset_settings(REAL_DATA_PRESET)
    assert real.mv_frame_step == MV_FRAME_STEP and real.benchmark == load_preset(REAL_DATA_PRESET).data.benchmark
    synthetic = resolve_prepare_settings(synthetic=True)  # the synthetic demo keeps its small settings
    assert (
        synthetic.preset,
        synthetic.mode,
        synthetic.frame_step,
        synthetic.image_size,
        synthetic.num_points,
    ) == _preset_settings(SYNTHETIC_PRESET)
    assert synthetic.mv_frame_step == SYNTHETIC_FRAME_STEP
    flags = resolve_prepare_settings(synthetic=False, frame_step=40, image_size="640x480", mode="both", benchmark="scannet")
    assert (flags.frame_step, flags.image_size, flags.mode, flags.benchmark) == (40, (640, 480), "both", "scannet")
    assert flags.num_points == load_preset(REAL_DATA_PRESET).data.num_points  # what no flag names comes from the preset
    named = resolve_prepare_settings(synthetic=False, preset="demo", overrides=["data.num_points=512"])
    assert (named.preset, named.frame_step, named.num_points) == (
        "demo",
        load_preset("demo").data.frame_step,
        512,
    )  # an explicit preset wins


@pytest.mark.parametrize(
    ("kwargs", "where", "problem"),
    [
        (dict(image_size="320"), "--image-size", "expected WIDTHxHEIGHT"),
        (dict(image_size="320x250"), "--image-size", "multiples of 16"),
        (dict(image_size="0x240"), "--image-size", "multiples of 16"),
        (dict(frame_step=0), "--frame-step", "invalid value 0: Input should be greater than 0"),
        (dict(mv_frame_step=-3), "--mv-frame-step", "invalid value -3: Input should be greater than 0"),
        (dict(mode="all"), "--mode", "invalid value 'all': must be one of 'sv', 'mv' or 'both'"),
    ],
)
def test_bad_flags_are_one_line_errors_naming_the_flag(kwargs: dict, where: str, problem: str) -> None:
    with pytest.raises(BifusionError, match=problem) as info:
        resolve_prepare_settings(synthetic=False, **kwargs)
    assert info.value.where == where and "\n" not in str(info.value)


def test_image_size_parser() -> None:
    assert parse_image_size("320x240") == (320, 240) and parse_image_size(" 640 X 480 ") == (640, 480)


@pytest.mark.slow
def test_cli_prepare_scannet_uses_real_data_settings_and_says_so(synthetic_data: Path, tmp_path: Path) -> None:
    _copy_scene_as(synthetic_data, tmp_path / "raw", "scene0000_00")
    out = tmp_path / "out"
    proc = run_cli("prepare", "--scannet", tmp_path / "raw", "--out", out)
    manifest = _manifest(out)
    real = load_preset(REAL_DATA_PRESET).data
    width, height = real.image_size
    assert (manifest["frame_step"], manifest["image_size"], manifest["num_points"]) == (
        real.frame_step,
        [width, height],
        real.num_points,
    )
    assert [s["frame"] for s in manifest["samples"]] == list(range(0, 101, real.frame_step))  # raw frames 0..100 every 20
    settings_line = next(line for line in proc.stdout.splitlines() if line.startswith("settings:"))
    for part in (
        f"preset {REAL_DATA_PRESET}",
        f"modes {real.mode}",
        f"frame steps {real.mode} {real.frame_step}",
        f"image {width}x{height}",
        f"{real.num_points:,} points/frame",
        "superpoints image",
        f"benchmark {real.benchmark}",
        f"splits: {PACKAGE_SOURCE}",
    ):
        assert part in settings_line, (part, settings_line)

    flags = run_cli(
        "prepare",
        "--scannet",
        tmp_path / "raw",
        "--out",
        tmp_path / "flags",
        "--frame-step",
        "20",
        "--image-size",
        "64x48",
        "--mode",
        "both",
        "--set",
        "data.num_points=256",
    )
    manifest = _manifest(tmp_path / "flags")
    assert (manifest["frame_step"], manifest["image_size"], manifest["num_points"]) == (20, [64, 48], 256)
    assert len(manifest["samples"]) == 6 and _manifest(tmp_path / "flags", "mv")["frame_step"] == MV_FRAME_STEP
    assert f"frame steps sv 20, mv {MV_FRAME_STEP} · image 64x48 · 256 points/frame" in flags.stdout


def test_cli_bad_image_size_fails_in_one_line_before_writing(synthetic_data: Path, tmp_path: Path) -> None:
    _copy_scene_as(synthetic_data, tmp_path / "raw", "scene0000_00")
    proc = run_cli("prepare", "--scannet", tmp_path / "raw", "--out", tmp_path / "out", "--image-size", "300x200", check=False)
    assert proc.returncode == 1
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "--image-size" in lines[0] and "multiples of 16" in lines[0]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- item 6: official split lists


def test_official_split_lists_are_package_data() -> None:
    lists = official_split_lists()
    assert {s: len(lists[s]) for s in SPLITS} == {"train": 1201, "val": 312, "test": 100}
    assert all(len(set(v)) == len(v) for v in lists.values())
    assert not set(lists["train"]) & set(lists["val"]) and not (set(lists["train"]) | set(lists["val"])) & set(lists["test"])
    assert "scene0011_00" in lists["val"] and "scene0000_00" in lists["train"] and lists["test"][0] == "scene0707_00"
    # pyproject ships them with the package (an installed bifusion has no source tree to read from)
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bifusion_core"]
    shipped = [
        p.relative_to(REPO / "bifusion_core").as_posix() for p in (REPO / "bifusion_core" / "data" / "raw" / "splits").iterdir()
    ]
    assert sorted(f for f in shipped if any(fnmatch.fnmatch(f, pat) for pat in patterns)) == [
        f"data/raw/splits/scannetv2_{s}.txt" for s in ("test", "train", "val")
    ]


def test_scans_without_split_files_get_the_official_splits(synthetic_data: Path, tmp_path: Path) -> None:
    for name in ("scene0011_00", "scene0191_00", "scene0707_00", "scene9999_00"):  # val, train, test, in no list
        _copy_scene_as(synthetic_data, tmp_path / "raw", name)
    reporter = RecordingReporter()
    summary = prepare_scannet(tmp_path / "raw", tmp_path / "out", reporter=reporter, **SMALL)
    manifest = _manifest(tmp_path / "out")
    assert {s["scene"]: s["split"] for s in manifest["scenes"]} == {
        "scene0011_00": "val",
        "scene0191_00": "train",
        "scene0707_00": "test",
        "scene9999_00": "train",
    }
    assert summary.unlisted == manifest["unlisted"] == ["scene9999_00"]
    assert summary.split_source == manifest["split_source"] == PACKAGE_SOURCE
    warnings = [n for n in reporter.notes if "none of the split lists" in n]
    assert len(warnings) == 1 and "scene9999_00" in warnings[0] and "as train" in warnings[0] and "\n" not in warnings[0]


def test_split_source_precedence(synthetic_data: Path, tmp_path: Path) -> None:
    _copy_scene_as(synthetic_data, tmp_path / "raw", "scene0011_00")  # officially val
    (tmp_path / "raw" / "splits").mkdir()
    (tmp_path / "raw" / "splits" / "scannetv2_test.txt").write_text("scene0011_00\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "scannetv2_train.txt").write_text("scene0011_00\n")

    def split_of(out: str, **kwargs) -> tuple[str, str]:
        summary = prepare_scannet(tmp_path / "raw", tmp_path / out, **SMALL, **kwargs)
        return _manifest(tmp_path / out)["scenes"][0]["split"], summary.split_source

    assert split_of("a", splits_dir=tmp_path / "mine") == ("train", str(tmp_path / "mine"))  # --splits first
    assert split_of("b") == ("test", str((tmp_path / "raw" / "splits").resolve()))  # then splits/ by the data
    shutil.rmtree(tmp_path / "raw" / "splits")
    assert split_of("c") == ("val", PACKAGE_SOURCE)  # then the official lists
    with pytest.raises(BifusionError, match="no scannetv2_train.txt"):
        prepare_scannet(tmp_path / "raw", tmp_path / "d", splits_dir=tmp_path / "nothing", **SMALL)


def test_synthetic_scenes_keep_the_generator_splits(synthetic_data: Path) -> None:
    manifest = _manifest(synthetic_data)  # scene0002_00 is officially train, the generator made it val
    assert {s["scene"]: s["split"] for s in manifest["scenes"]}["scene0002_00"] == "val"
    assert manifest["split_source"] == str(synthetic_data.resolve() / "splits")


# ----------------------------------------------------------------------------- item 7: random CLIP init


def test_user_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv(CACHE_ENV)
    assert user_cache_dir() == tmp_path / "xdg" / "bifusion"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "bifusion"


@pytest.mark.slow
def test_random_clip_init_is_byte_reproducible(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cached = cached_random_clip_weights(0)
    assert cached == tmp_path / "cache" / "clip" / "random-vitb16-seed0.bin"
    elsewhere = save_random_clip_weights(tmp_path / "data" / "clip" / "other-name.bin", seed=0)
    first, second = (_sha256(p) for p in (cached, elsewhere))
    assert first == second
    with zipfile.ZipFile(cached) as archive:  # no (temporary) file name inside the zip
        assert {name.split("/")[0] for name in archive.namelist()} == {"archive"}
    assert feature_tag(4, (224, 160), weights_digest(cached)) == feature_tag(4, (224, 160), weights_digest(elsewhere))
    assert [p.name for p in _files(tmp_path / "cache")] == ["random-vitb16-seed0.bin"]  # written atomically: no leftovers
    assert cached_random_clip_weights(0).stat().st_mtime_ns == cached.stat().st_mtime_ns  # reused, not rewritten


@pytest.mark.slow
def test_bad_data_root_writes_no_clip_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """precompute-clip and eval refuse an empty data root in one line, before the ~600 MB random init is made."""
    import torch

    from bifusion_core.config import load_preset
    from bifusion_core.data.labels import LABEL_SETS
    from bifusion_core.engine.checkpoint import save_checkpoint
    from bifusion_core.models.bifusion import build_model

    cache, empty = tmp_path / "cache", tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(cache))
    cfg = load_preset("demo", ["data.root=" + str(empty)])
    assert cfg.model.use_2d and cfg.clip.weights is None  # a preset that would use the random init
    run = tmp_path / "run"
    torch.manual_seed(0)
    model = build_model(cfg, LABEL_SETS[cfg.data.benchmark])
    save_checkpoint(run / "checkpoints" / "best.pt", {"model": model.state_dict(), "config": cfg.model_dump(mode="json")})
    run_files = _files(run)

    for args in (("precompute-clip", "--data", empty), ("eval", run, "--data", empty, "--split", "val")):
        proc = run_cli(*args, check=False)
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1, (args, lines)
        assert "manifest.json" in lines[0] and "prepare" in lines[0]
        assert _files(cache) == [] and _files(empty) == [] and _files(run) == run_files
