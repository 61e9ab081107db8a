"""Preset files -> validated ``Preset``: ``base:`` inheritance, dotted overrides, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..atomic_io import write_text
from ..errors import ConfigError, validation_error
from .schema import Preset

PRESET_DIR = Path(os.environ.get("BIFUSION_PRESETS", Path(__file__).resolve().parents[2] / "presets"))


def preset_path(name_or_path: str | Path) -> Path:
    """A preset is named (``bif-sv-advanced``) or given as a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(candidate, "preset file not found")
        return candidate
    path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset '{name_or_path}'", f"unknown (available: {', '.join(available_presets())})")
    return path


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "a preset must be a mapping of sections")
    return data


def deep_merge(base: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_raw(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The preset's mapping with its ``base:`` chain merged in (child wins)."""
    path = preset_path(name_or_path).resolve()
    if path in _seen:
        raise ConfigError(path, "circular base: chain " + " -> ".join(p.stem for p in (*_seen, path)))
    data = _read_yaml(path)
    base = data.pop("base", None)
    data.setdefault("name", path.stem)
    if base is None:
        return data
    if isinstance(base, str) and not base.endswith((".yaml", ".yml")):
        parent = resolve_raw(base, (*_seen, path))
    else:
        parent = resolve_raw(path.parent / str(base), (*_seen, path))
    parent.pop("description", None)
    return deep_merge(parent, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``model.fusion.gate=lite`` -> (["model", "fusion", "gate"], "lite"); values typed by YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item}", "expected KEY=VALUE, e.g. model.fusion.gate=lite")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set`` items: text typed by YAML (``epochs=3`` is an int)."""
    for item in overrides:
        keys, value = parse_override(item)
        data = set_dotted(data, keys, value, f"--set {item}")
    return data


def evaluation_overrides(items: list[str]) -> dict[str, Any]:
    """``--set`` items of an evaluation → {dotted key: typed value}. Only ``eval.*`` keys: the
    model, its data settings and its training are fixed by the checkpoint being scored."""
    out = {}
    for item in items:
        keys, value = parse_override(item)
        if keys[0] != "eval" or len(keys) < 2:
            raise ConfigError(f"--set {item}", "evaluation takes eval.* keys only (e.g. eval.online.merge_threshold=0.2)")
        if keys == ["eval", "split"]:  # taken from --split: accepting it here would score val under a train label
            raise ConfigError(f"--set {item}", "choose the split with --split (e.g. --split train)")
        out[".".join(keys)] = value
    return out


def set_dotted(data: dict[str, Any], keys: list[str], value: Any, where: str) -> dict[str, Any]:
    """A copy of ``data`` with ``keys`` (a dotted path) set to ``value`` as given, never re-parsed."""
    data = dict(data)
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ConfigError(where, f"'{'.'.join(keys[: depth + 1])}' is a value, not a section")
        node[key] = dict(child)
        node = node[key]
    node[keys[-1]] = value
    return data


def load_preset(name_or_path: str | Path, overrides: list[str] | None = None, **fields: Any) -> Preset:
    """Resolve, override and validate a preset.

    ``fields`` are dotted keys from CLI flags (``**{"data.root": Path(...)}``) set with their typed
    value, after the ``--set`` texts: a path such as ``/data/scan #2`` or ``2024-01-01`` stays a path.
    """
    data = apply_overrides(resolve_raw(name_or_path), list(overrides or []))
    for key, value in fields.items():
        if value is not None:
            data = set_dotted(data, key.split("."), str(value) if isinstance(value, Path) else value, key)
    return validate_preset(data)


def validate_preset(data: dict[str, Any]) -> Preset:
    try:
        return Preset.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, model=Preset, default="preset", error=ConfigError) from None


def preset_to_yaml(preset: Preset) -> str:
    return yaml.safe_dump(preset.model_dump(mode="json"), sort_keys=False)


def save_preset(preset: Preset, path: str | Path) -> None:
    write_text(path, preset_to_yaml(preset))


def load_saved_config(path: str | Path) -> Preset:
    """A run folder's ``config.yaml`` (already fully resolved)."""
    return validate_preset(_read_yaml(Path(path)))
