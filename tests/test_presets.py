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


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", ["bif-sv-simple", "bif-sv-advanced"])
def test_inheritance_chain_child_wins(name):
    """A preset is its base with its own file's keys on top: every key the file sets wins, every other
    key is the base's (values read from the files, not restated here)."""
    raw = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    child = _leaves(load_preset(name).model_dump(mode="json"))
    parent = _leaves(load_preset(raw["base"]).model_dump(mode="json"))
    own = {k: v for k, v in _leaves(raw).items() if k not in ("base", "name", "description")}
    assert own and all(child[k] == v for k, v in own.items())
    inherited = [
        k for k in child if k not in own and k not in ("name", "description") and not any(k.startswith(o + ".") for o in own)
    ]
    assert inherited and all(child[k] == parent[k] for k in inherited)


def test_overrides_are_typed_and_order_free():
    a = load_preset("demo", ["model.fusion.gate=plain", "optim.lr=1e-3", "data.image_size=[64, 48]"])
    b = load_preset("demo", ["data.image_size=[64, 48]", "optim.lr=1e-3", "model.fusion.gate=plain"])
    assert a == b
    assert a.optim.lr == pytest.approx(1e-3) and isinstance(a.optim.lr, float)
    assert a.data.image_size == (64, 48)
    assert load_preset("demo", ["clip.weights=/tmp/x.bin"]).clip.weights == Path("/tmp/x.bin")


@pytest.mark.parametrize("folder", ["/data/scan #2", "2024-01-01", "yes", "on", "1e3"])
def test_flag_values_are_set_as_typed(folder):
    """CLI flags (--data, --clip-weights, --output-dir, --init-from) are paths, never YAML text."""
    cfg = load_preset(
        "demo",
        ["train.max_iters=2"],
        **{
            "data.root": Path(folder),
            "clip.weights": Path(folder) / "w.bin",
            "train.output_dir": Path(folder),
            "train.init.checkpoint": Path(folder),
            "train.max_iters": 5,
        },
    )
    assert str(cfg.data.root) == folder and str(cfg.train.output_dir) == folder
    assert cfg.clip.weights == Path(folder) / "w.bin" and str(cfg.train.init.checkpoint) == folder
    assert cfg.train.max_iters == 5  # a flag wins over --set


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        ("model.fusion.gate=heavy", "model.fusion.gate", "'plain', 'lite' or 'enhanced'"),
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


FAMILY = ("3d-sv", "3d-mv", "3dtsa-sv", "3dtsa-mv", "bif-sv-simple", "bif-sv-advanced", "bif-mv")


@pytest.mark.parametrize("name", FAMILY)
def test_preset_family_and_its_scannet_twin(name):
    p200, p20 = load_preset(name), load_preset(f"scannet-{name}")
    assert p200.data.benchmark == "scannet200" and p20.data.benchmark == "scannet"
    twin = p20.model_copy(deep=True)
    twin.data.benchmark, twin.name, twin.description = "scannet200", name, p200.description
    assert twin == p200  # the 20-class twin differs only in its label set
    assert yaml.safe_load((PRESETS / f"scannet-{name}.yaml").read_text())["base"] == name
    # the name says what the preset is
    assert p200.data.mode == ("mv" if name.endswith("-mv") else "sv")
    assert p200.model.use_2d == name.startswith("bif")
    assert p200.model.tiny_sa.enabled or "tsa" not in name
    if not p200.model.use_2d:  # trained from scratch: the whole 3D branch trains from S0
        assert {"backbone3d", "tiny_sa"} <= set(p200.train.unfreeze.s0)
    else:  # started from a 3D-only run: S0 leaves the 3D branch frozen
        assert "backbone3d" not in p200.train.unfreeze.s0
