"""The CLI surface: fast help, presets, validate, clear one-line errors."""

import subprocess
import sys

from cli import run_cli


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


def test_validate_reports_three_checks(synthetic_data):
    out = run_cli("validate", "--preset", "demo", "--data", synthetic_data).stdout
    for check in ("preset", "data", "model"):
        assert check in out
    assert out.count("pass") == 3
    assert "M parameters" in out and "gate" in out


def test_validate_missing_data_fails_naming_the_manifest(tmp_path):
    proc = run_cli("validate", "--preset", "demo", "--data", tmp_path / "nowhere", check=False)
    assert proc.returncode == 1
    assert "manifest.json" in proc.stderr and "bifusion prepare" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_without_data_is_one_line(tmp_path):
    proc = run_cli("train", "--preset", "demo", "--data", tmp_path, "--max-iters", "1", check=False)
    assert proc.returncode == 1
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "manifest.json" in lines[0]


def test_eval_of_missing_run_is_one_line(tmp_path):
    proc = run_cli("eval", tmp_path / "no-run", check=False)
    assert proc.returncode == 1 and "neither a run folder nor a checkpoint" in proc.stderr


def test_stats(synthetic_data):
    out = run_cli("stats", "--data", synthetic_data).stdout
    assert "frames/train" in out and "frames/val" in out and "instances per frame" in out
