"""The CLI surface: fast help, presets, validate, clear one-line errors."""

import json
import re
import subprocess
import sys

import pytest

from cli import run_cli
from synthetic_set import PREPARED_NUM_POINTS, SYNTHETIC_OPTIONS, SYNTHETIC_SCENES

TRAIN_FRAMES = (SYNTHETIC_SCENES - 1) * SYNTHETIC_OPTIONS.num_frames  # the last synthetic scene is val
VAL_FRAMES = SYNTHETIC_OPTIONS.num_frames


def _row(out: str, name: str) -> str:
    """The value column of a metrics table row."""
    match = re.search(rf"{re.escape(name)}\s*│\s*([^│]+?)\s*│", out)
    assert match is not None, f"no row {name!r} in\n{out}"
    return match.group(1)


def test_help_imports_no_heavy_library():
    code = "import sys, bifusion_cli.app; sys.exit(any(m in sys.modules for m in ('torch', 'MinkowskiEngine', 'open_clip')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    out = run_cli("--help").stdout
    for command in ("prepare", "precompute-clip", "validate", "train", "resume", "eval", "stats", "presets"):
        assert command in out


def test_presets_lists_descriptions():
    out = run_cli("presets").stdout
    for name in ("3d-sv", "bif-sv-simple", "bif-sv-advanced", "demo"):
        assert name in out
    assert "CPU demo" in out


def test_validate_bad_key_is_one_line_exit_2():
    proc = run_cli("validate", "--preset", "demo", "--set", "model.fusion.gate=heavy", check=False)
    assert proc.returncode == 2
    assert "model.fusion.gate" in proc.stderr and "'plain', 'lite' or 'enhanced'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    proc = run_cli("validate-config", "--preset", "demo", "--set", "optim.lrr=1", check=False)
    assert proc.returncode == 2 and "optim.lrr: unknown key" in proc.stderr


@pytest.mark.slow
def test_validate_reports_three_checks(synthetic_data):
    out = run_cli("validate", "--preset", "demo", "--data", synthetic_data).stdout
    for check in ("preset", "data", "model"):
        assert check in out
    assert out.count("pass") == 3
    assert f"{TRAIN_FRAMES} train, {VAL_FRAMES} val frames" in out
    assert "M parameters" in out and "gate" in out


def test_validate_missing_data_fails_naming_the_manifest(tmp_path):
    proc = run_cli("validate", "--preset", "demo", "--data", tmp_path / "nowhere", check=False)
    assert proc.returncode == 1
    assert "manifest.json" in proc.stderr and "bifusion prepare" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_without_data_is_one_line_and_leaves_no_run_folder(tmp_path):
    proc = run_cli("train", "--preset", "demo", "--data", tmp_path / "data", "--max-iters", "1", check=False, cwd=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "manifest.json" in lines[0]
    assert list(tmp_path.iterdir()) == []  # not even outputs/ under the working folder


@pytest.mark.slow
def test_train_failing_before_its_first_step_leaves_no_run_folder(synthetic_data, tmp_path):
    runs = tmp_path / "runs"
    proc = run_cli(
        "train",
        "--preset",
        "demo",
        "--data",
        synthetic_data,
        "--output-dir",
        runs,
        "--init-from",
        tmp_path / "no-run",
        "--max-iters",
        "1",
        check=False,
    )
    assert proc.returncode == 1 and "no-run" in proc.stderr
    assert not runs.exists()


def test_eval_of_missing_run_is_one_line(tmp_path):
    proc = run_cli("eval", tmp_path / "no-run", check=False)
    assert proc.returncode == 1 and "neither a run folder nor a checkpoint" in proc.stderr


def test_stats(synthetic_data):
    out = run_cli("stats", "--data", synthetic_data).stdout
    assert _row(out, "scenes") == str(SYNTHETIC_SCENES)
    assert _row(out, "frames/train") == str(TRAIN_FRAMES) and _row(out, "frames/val") == str(VAL_FRAMES)
    assert _row(out, "points") == f"{(TRAIN_FRAMES + VAL_FRAMES) * PREPARED_NUM_POINTS:,}"
    assert _row(out, "skipped frames") == str(SYNTHETIC_SCENES)  # each recording's lost-tracking frame
    assert float(_row(out, "instances per frame")) >= 1


@pytest.mark.parametrize("folder", ["scan #2", "2024-01-01", "yes"])
def test_data_paths_are_taken_as_typed(synthetic_data, tmp_path, folder):
    """--data is a path, never YAML text: '#' is no comment, a date no date, 'yes' no boolean
    (given relative, as YAML would have read the bare word)."""
    (tmp_path / folder).symlink_to(synthetic_data, target_is_directory=True)
    out = run_cli("stats", "--data", folder, cwd=tmp_path).stdout
    assert _row(out, "frames/val") == str(VAL_FRAMES)


def test_a_data_root_of_an_older_format_is_refused_in_one_line(synthetic_data, tmp_path):
    """Format 2 put colour pixels through the extrinsic ScanNet's files carry; its samples must be prepared again."""
    old = tmp_path / "old"
    (old / "sv").mkdir(parents=True)
    manifest = json.loads((synthetic_data / "sv" / "manifest.json").read_text())
    (old / "sv" / "manifest.json").write_text(json.dumps({**manifest, "version": 2}))
    proc = run_cli("train", "--preset", "demo", "--data", old, "--output-dir", tmp_path / "runs", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert lines == [
        f"error: {old / 'sv' / 'manifest.json'}: prepared by an older bifusion (format 2, now 3); "
        "run `bifusion prepare` again into a new folder"
    ]
    assert not (tmp_path / "runs").exists()
