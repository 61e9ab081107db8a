"""Presets: YAML with ``base:`` inheritance, validated into pydantic models."""

from .loader import available_presets, load_preset, load_saved_config, save_preset
from .schema import Preset

__all__ = ["Preset", "available_presets", "load_preset", "load_saved_config", "save_preset"]
