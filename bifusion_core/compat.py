"""Imports of the heavy, optional-at-CLI-start dependencies, with one clear error when missing.

MinkowskiEngine 0.5.4 still does ``collections.Sequence``; on Python >= 3.10 those names
live only in ``collections.abc``, so they are aliased here before its first import.
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import warnings
from types import ModuleType

from .errors import BifusionError


def _alias_collections_abc() -> None:
    for name in collections.abc.__all__:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


def require(module: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise a one-line error that names the fix (``make setup``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BifusionError(package or module, f"not importable ({exc}); run `make setup` to install it into .venv") from None


def import_minkowski() -> ModuleType:
    _alias_collections_abc()
    with warnings.catch_warnings():
        # "compiled with CPU_ONLY": expected on CPU machines, and said once by `make setup`.
        warnings.filterwarnings("ignore", message=".*CPU_ONLY.*")
        return require("MinkowskiEngine", "MinkowskiEngine")
