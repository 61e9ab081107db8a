"""Which split each scan belongs to: ScanNet's scannetv2_{train,val,test}.txt scene lists.

The official lists are facts about the data set, shipped as package data (``data/splits/``), so a
ScanNet folder without its own lists still gets ScanNet's train/val/test split instead of every
scene silently becoming train (and ``eval --split val`` then finding nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ...errors import BifusionError
from ...reporting import Reporter
from .scannet_files import read_split

SPLITS = ("train", "val", "test")
UNLISTED_SPLIT = "train"
PACKAGE_SOURCE = "official ScanNet v2 lists (package data)"
SHOWN_UNLISTED = 20  # names in the warning line; the manifest keeps them all


@dataclass(frozen=True)
class SplitAssignment:
    splits: dict[str, str]  # scene -> train / val / test
    unlisted: list[str]  # scenes in no list (given UNLISTED_SPLIT)
    source: str  # where the lists came from: a folder, or PACKAGE_SOURCE


def split_file_name(split: str) -> str:
    return f"scannetv2_{split}.txt"


def official_split_lists() -> dict[str, list[str]]:
    """ScanNet v2's official scene lists: 1201 train, 312 val, 100 test scans."""
    folder = resources.files(__package__).joinpath("splits")
    return {s: folder.joinpath(split_file_name(s)).read_text().split() for s in SPLITS}


def _folder_lists(folder: Path) -> dict[str, list[str]] | None:
    files = {s: folder / split_file_name(s) for s in SPLITS}
    if not any(p.is_file() for p in files.values()):
        return None
    return {s: read_split(p) for s, p in files.items() if p.is_file()}


def assign_splits(root: Path, splits_dir: str | Path | None, scenes: list[str], reporter: Reporter) -> SplitAssignment:
    """Lists from ``splits_dir``, else ``splits/`` in or next to ``root``, else the official ones.

    Only the first source that has any list is used (lists are never mixed across sources).
    Scenes in no list become train and are named in one reporter note.
    """
    if splits_dir is not None:
        folder = Path(splits_dir)
        lists = _folder_lists(folder)
        if lists is None:
            raise BifusionError(folder, f"no {', '.join(split_file_name(s) for s in SPLITS)} here")
        source = str(folder)
    else:
        for folder in (root / "splits", root.parent / "splits"):
            lists = _folder_lists(folder)
            if lists is not None:
                source = str(folder)
                break
        else:
            lists, source = official_split_lists(), PACKAGE_SOURCE
    listed = {scene: split for split in SPLITS for scene in lists.get(split, ())}
    unlisted = [s for s in scenes if s not in listed]
    if unlisted:
        shown = ", ".join(unlisted[:SHOWN_UNLISTED])
        if len(unlisted) > SHOWN_UNLISTED:
            shown += f" and {len(unlisted) - SHOWN_UNLISTED} more (all in the manifest's 'unlisted')"
        reporter.note(
            f"{len(unlisted)} scene(s) are in none of the split lists ({source}) and are prepared as {UNLISTED_SPLIT}: {shown}"
        )
    return SplitAssignment({s: listed.get(s, UNLISTED_SPLIT) for s in scenes}, unlisted, source)
