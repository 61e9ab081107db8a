"""Preset inheritance, overrides and one-line errors."""

from pathlib import Path

import pytest
import yaml

from bifusion_core.config import available_presets, load_preset, load_saved_config, save_preset
from bifusion_core.config.loader import resolve_raw
from bifusion_core.errors import ConfigError

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def test_required_presets_exist_and_validate():
    names = available_presets()
    for name in ("3d-sv", "bif-sv-simple", "bif-sv-advanced", "demo"):
        assert name in names
        preset = load_preset(name)
        assert preset.name == name
        assert resolve_raw(name)["description"]


def test_inheritance_chain_child_wins():
    base = load_preset("3d-sv")
    simple = load_preset("bif-sv-simple")
    advanced = load_preset("bif-sv-advanced")
    assert not base.model.use_2d and simple.model.use_2d and advanced.model.use_2d
    assert simple.clip.num_layers == 4 and advanced.clip.num_layers == 6
    assert simple.model.fusion.gate == "plain" and advanced.model.fusion.gate == "lite"
    # inherited untouched from 3d-sv through two levels
    assert advanced.data.voxel_size == base.data.voxel_size == 0.02
    assert advanced.model.backbone3d.arch == "Res16UNet34C"
    # each file is a minimal diff: the advanced preset does not restate use_2d
    raw = yaml.safe_load((PRESETS / "bif-sv-advanced.yaml").read_text())
    assert "use_2d" not in raw.get("model", {})


def test_overrides_are_typed_and_order_free():
    a = load_preset("demo", ["model.fusion.gate=plain", "optim.lr=1e-3", "data.image_size=[64, 48]"])
    b = load_preset("demo", ["data.image_size=[64, 48]", "optim.lr=1e-3", "model.fusion.gate=plain"])
    assert a == b
    assert a.optim.lr == pytest.approx(1e-3) and isinstance(a.optim.lr, float)
    assert a.data.image_size == (64, 48)
    assert load_preset("demo", ["clip.weights=/tmp/x.bin"]).clip.weights == Path("/tmp/x.bin")


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        ("model.fusion.gate=heavy", "model.fusion.gate", "'plain' or 'lite'"),
        ("model.fusion.gatex=1", "model.fusion.gatex", "unknown key"),
        ("data.voxel_size=-1", "data.voxel_size", "greater than 0"),
        ("data.image_size=[100,100]", "data.image_size", "multiples of 16"),
        ("train", "--set train", "KEY=VALUE"),
    ],
)
def test_bad_values_name_key_value_and_allowed(override, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_preset("demo", [override])
    message = str(info.value)
    assert message.startswith(key)
    assert fragment in message
    assert "\n" not in message


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError) as info:
        load_preset("demo", ["loss.clipp=0.1"])
    assert "allowed here:" in str(info.value) and "clip" in str(info.value)


def test_unknown_preset_and_circular_base(tmp_path):
    with pytest.raises(ConfigError, match="unknown"):
        load_preset("no-such-preset")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: b.yaml\n")
    b.write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_preset(a)


def test_file_preset_with_relative_base(tmp_path):
    child = tmp_path / "mine.yaml"
    child.write_text("base: " + str((PRESETS / "demo.yaml").resolve()) + "\ndata: {batch_size: 2}\n")
    preset = load_preset(child)
    assert preset.data.batch_size == 2 and preset.data.voxel_size == load_preset("demo").data.voxel_size


def test_saved_config_round_trip(tmp_path):
    preset = load_preset("bif-sv-advanced", ["train.max_iters=7"])
    save_preset(preset, tmp_path / "config.yaml")
    assert load_saved_config(tmp_path / "config.yaml") == preset
