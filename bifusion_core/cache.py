"""The user cache: files bifusion derives once and shares across data roots and runs.

``$BIFUSION_CACHE`` if set, else ``$XDG_CACHE_HOME/bifusion``, else ``~/.cache/bifusion``.
Only derived, reproducible files live here (deleting the folder loses nothing), so several data
roots can share them instead of each keeping its own copy.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "BIFUSION_CACHE"


def user_cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bifusion"
