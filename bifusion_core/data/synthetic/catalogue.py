"""What a synthetic room may hold: its categories (with their ScanNet label-table ids), the prints
of the texture-only classes, the furniture lists and the colour palette.

Texture-only classes: two groups of classes share shape, size distribution, mean colour and
places, and differ only in their print (period ``TEXTURE_PERIOD_M`` = 5 cm: a >= 5 cm voxel
averages it away, while a 16-px CLIP patch at the demo resolution still spans several periods),
so only a model that uses 2D features can tell them apart. ``pillow`` (stripes) and ``towel``
(checkerboard) lie side by side on every bed and couch; ``picture`` (diagonal stripes),
``whiteboard`` (horizontal bands) and ``poster`` (rings) hang flat on the walls.
"""

from __future__ import annotations

import numpy as np

# raw category -> (tsv id, nyu40 id, nyu40 class name); a small, consistent slice of ScanNet's table.
CATEGORIES: dict[str, tuple[int, int, str]] = {
    "wall": (1, 1, "wall"),
    "floor": (3, 2, "floor"),
    "chair": (2, 5, "chair"),
    "table": (4, 7, "table"),
    "cabinet": (7, 3, "cabinet"),
    "bed": (11, 4, "bed"),
    "pillow": (13, 18, "pillow"),
    "bookshelf": (18, 10, "bookshelf"),
    "box": (26, 29, "box"),
    "towel": (31, 27, "towel"),
    "nightstand": (34, 32, "night stand"),
    "trash can": (56, 39, "otherfurniture"),
    "couch": (6, 6, "sofa"),
    "picture": (15, 11, "picture"),
    "whiteboard": (52, 30, "whiteboard"),
    "poster": (1188, 11, "picture"),
}
TEXTURE_PERIOD_M = 0.05  # the prints of the texture-only classes
#: ScanNet v1 spellings that v2's label table lacks (v2: ``trash can``, ``dish rack``): the
#: aggregation's label of each scan's unannotated clutter object
UNKNOWN_LABELS = ("dishrack", "trashcan")
#: print of each texture-only class (same mean colour, contrast and size within each group)
PRINTS = {"pillow": "stripes", "towel": "checker", "picture": "diagonal", "whiteboard": "bands", "poster": "rings"}
SOFT_CLASSES = ("pillow", "towel")  # lie on beds and couches
WALL_CLASSES = ("picture", "whiteboard", "poster")  # hang flat on walls
ROOM_HEIGHT_M = 2.6
FURNITURE = ("chair", "table", "cabinet", "box", "nightstand", "bookshelf", "trash can")
SUPPORTS = ("bed", "couch")  # every scene has one, with a pillow and a towel on it
PALETTE = np.array(
    [
        [0.55, 0.40, 0.28],
        [0.70, 0.62, 0.50],
        [0.35, 0.35, 0.38],
        [0.60, 0.25, 0.22],
        [0.25, 0.40, 0.55],
        [0.45, 0.55, 0.35],
        [0.75, 0.72, 0.68],
        [0.50, 0.45, 0.60],
    ]
)


def labels_table_rows(categories: list[str]) -> list[dict[str, object]]:
    """The label table's rows (``scannetv2-labels.combined.tsv``) of ``categories``."""
    return [
        {
            "id": CATEGORIES[c][0],
            "raw_category": c,
            "category": c,
            "count": 1,
            "nyu40id": CATEGORIES[c][1],
            "nyu40class": CATEGORIES[c][2],
        }
        for c in sorted(categories, key=lambda c: CATEGORIES[c][0])
    ]
