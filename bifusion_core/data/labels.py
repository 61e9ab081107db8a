"""Benchmark label sets as package constants, and the ScanNet label table (tsv) reader/writer.

A prepared sample stores *raw* ids (tsv ``id`` and ``nyu40id``); a ``LabelSet`` turns them into
train ids only when a model needs them, so one preparation serves both ScanNet20 and ScanNet200.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, overload

import numpy as np

from ..atomic_io import write_text
from ..errors import BifusionError

# ScanNet200 benchmark (BenchmarkScripts/ScanNet200/scannet200_constants.py): raw tsv ``id`` -> name.
_SCANNET200: tuple[tuple[int, str], ...] = (
    (1, "wall"),
    (2, "chair"),
    (3, "floor"),
    (4, "table"),
    (5, "door"),
    (6, "couch"),
    (7, "cabinet"),
    (8, "shelf"),
    (9, "desk"),
    (10, "office chair"),
    (11, "bed"),
    (13, "pillow"),
    (14, "sink"),
    (15, "picture"),
    (16, "window"),
    (17, "toilet"),
    (18, "bookshelf"),
    (19, "monitor"),
    (21, "curtain"),
    (22, "book"),
    (23, "armchair"),
    (24, "coffee table"),
    (26, "box"),
    (27, "refrigerator"),
    (28, "lamp"),
    (29, "kitchen cabinet"),
    (31, "towel"),
    (32, "clothes"),
    (33, "tv"),
    (34, "nightstand"),
    (35, "counter"),
    (36, "dresser"),
    (38, "stool"),
    (39, "cushion"),
    (40, "plant"),
    (41, "ceiling"),
    (42, "bathtub"),
    (44, "end table"),
    (45, "dining table"),
    (46, "keyboard"),
    (47, "bag"),
    (48, "backpack"),
    (49, "toilet paper"),
    (50, "printer"),
    (51, "tv stand"),
    (52, "whiteboard"),
    (54, "blanket"),
    (55, "shower curtain"),
    (56, "trash can"),
    (57, "closet"),
    (58, "stairs"),
    (59, "microwave"),
    (62, "stove"),
    (63, "shoe"),
    (64, "computer tower"),
    (65, "bottle"),
    (66, "bin"),
    (67, "ottoman"),
    (68, "bench"),
    (69, "board"),
    (70, "washing machine"),
    (71, "mirror"),
    (72, "copier"),
    (73, "basket"),
    (74, "sofa chair"),
    (75, "file cabinet"),
    (76, "fan"),
    (77, "laptop"),
    (78, "shower"),
    (79, "paper"),
    (80, "person"),
    (82, "paper towel dispenser"),
    (84, "oven"),
    (86, "blinds"),
    (87, "rack"),
    (88, "plate"),
    (89, "blackboard"),
    (90, "piano"),
    (93, "suitcase"),
    (95, "rail"),
    (96, "radiator"),
    (97, "recycling bin"),
    (98, "container"),
    (99, "wardrobe"),
    (100, "soap dispenser"),
    (101, "telephone"),
    (102, "bucket"),
    (103, "clock"),
    (104, "stand"),
    (105, "light"),
    (106, "laundry basket"),
    (107, "pipe"),
    (110, "clothes dryer"),
    (112, "guitar"),
    (115, "toilet paper holder"),
    (116, "seat"),
    (118, "speaker"),
    (120, "column"),
    (121, "bicycle"),
    (122, "ladder"),
    (125, "bathroom stall"),
    (128, "shower wall"),
    (130, "cup"),
    (131, "jacket"),
    (132, "storage bin"),
    (134, "coffee maker"),
    (136, "dishwasher"),
    (138, "paper towel roll"),
    (139, "machine"),
    (140, "mat"),
    (141, "windowsill"),
    (145, "bar"),
    (148, "toaster"),
    (154, "bulletin board"),
    (155, "ironing board"),
    (156, "fireplace"),
    (157, "soap dish"),
    (159, "kitchen counter"),
    (161, "doorframe"),
    (163, "toilet paper dispenser"),
    (165, "mini fridge"),
    (166, "fire extinguisher"),
    (168, "ball"),
    (169, "hat"),
    (170, "shower curtain rod"),
    (177, "water cooler"),
    (180, "paper cutter"),
    (185, "tray"),
    (188, "shower door"),
    (191, "pillar"),
    (193, "ledge"),
    (195, "toaster oven"),
    (202, "mouse"),
    (208, "toilet seat cover dispenser"),
    (213, "furniture"),
    (214, "cart"),
    (221, "storage container"),
    (229, "scale"),
    (230, "tissue box"),
    (232, "light switch"),
    (233, "crate"),
    (242, "power outlet"),
    (250, "decoration"),
    (261, "sign"),
    (264, "projector"),
    (276, "closet door"),
    (283, "vacuum cleaner"),
    (286, "candle"),
    (300, "plunger"),
    (304, "stuffed animal"),
    (312, "headphones"),
    (323, "dish rack"),
    (325, "broom"),
    (331, "guitar case"),
    (342, "range hood"),
    (356, "dustpan"),
    (370, "hair dryer"),
    (392, "water bottle"),
    (395, "handicap bar"),
    (399, "purse"),
    (408, "vent"),
    (417, "shower floor"),
    (488, "water pitcher"),
    (540, "mailbox"),
    (562, "bowl"),
    (570, "paper bag"),
    (572, "alarm clock"),
    (581, "music stand"),
    (609, "projector screen"),
    (748, "divider"),
    (776, "laundry detergent"),
    (1156, "bathroom counter"),
    (1163, "object"),
    (1164, "bathroom vanity"),
    (1165, "closet wall"),
    (1166, "laundry hamper"),
    (1167, "bathroom stall door"),
    (1168, "ceiling light"),
    (1169, "trash bin"),
    (1170, "dumbbell"),
    (1171, "stair rail"),
    (1172, "tube"),
    (1173, "bathroom cabinet"),
    (1174, "cd case"),
    (1175, "closet rod"),
    (1176, "coffee kettle"),
    (1178, "structure"),
    (1179, "shower head"),
    (1180, "keyboard piano"),
    (1181, "case of water bottles"),
    (1182, "coat rack"),
    (1183, "storage organizer"),
    (1184, "folded chair"),
    (1185, "fire alarm"),
    (1186, "power strip"),
    (1187, "calendar"),
    (1188, "poster"),
    (1189, "potted plant"),
    (1190, "luggage"),
    (1191, "mattress"),
)
VALID_CLASS_IDS_200: tuple[int, ...] = tuple(i for i, _ in _SCANNET200)
CLASS_LABELS_200: tuple[str, ...] = tuple(n for _, n in _SCANNET200)

# ScanNet200 frequency groups (BenchmarkScripts/ScanNet200/scannet200_splits.py: HEAD_CATS_SCANNET_200,
# COMMON_CATS_SCANNET_200, TAIL_CATS_SCANNET_200, there given by name; here by raw id, 66 / 68 / 66).
SCANNET200_HEAD_IDS: tuple[int, ...] = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    21,
    22,
    23,
    24,
    26,
    27,
    28,
    29,
    31,
    32,
    33,
    34,
    35,
    36,
    38,
    40,
    41,
    42,
    48,
    51,
    52,
    55,
    56,
    57,
    58,
    62,
    69,
    70,
    71,
    72,
    74,
    75,
    78,
    86,
    89,
    96,
    97,
    99,
    110,
    125,
    128,
    159,
    161,
    540,
    1163,
    1164,
    1165,
    1171,
)
SCANNET200_COMMON_IDS: tuple[int, ...] = (
    39,
    44,
    45,
    46,
    47,
    49,
    50,
    54,
    59,
    63,
    64,
    65,
    66,
    67,
    68,
    73,
    76,
    77,
    80,
    82,
    84,
    87,
    90,
    93,
    95,
    98,
    101,
    104,
    105,
    106,
    107,
    116,
    120,
    121,
    122,
    131,
    132,
    134,
    136,
    139,
    140,
    141,
    154,
    156,
    165,
    177,
    188,
    191,
    193,
    213,
    214,
    250,
    276,
    283,
    323,
    342,
    609,
    748,
    1156,
    1166,
    1167,
    1168,
    1169,
    1173,
    1178,
    1183,
    1189,
    1191,
)
SCANNET200_TAIL_IDS: tuple[int, ...] = (
    79,
    88,
    100,
    102,
    103,
    112,
    115,
    118,
    130,
    138,
    145,
    148,
    155,
    157,
    163,
    166,
    168,
    169,
    170,
    180,
    185,
    195,
    202,
    208,
    221,
    229,
    230,
    232,
    233,
    242,
    261,
    264,
    286,
    300,
    304,
    312,
    325,
    331,
    356,
    370,
    392,
    395,
    399,
    408,
    417,
    488,
    562,
    570,
    572,
    581,
    776,
    1170,
    1172,
    1174,
    1175,
    1176,
    1179,
    1180,
    1181,
    1182,
    1184,
    1185,
    1186,
    1187,
    1188,
    1190,
)

# ScanNet20 benchmark: nyu40 ids and names.
VALID_CLASS_IDS_20: tuple[int, ...] = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    14,
    16,
    24,
    28,
    33,
    34,
    36,
    39,
)
CLASS_LABELS_20: tuple[str, ...] = (
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "desk",
    "curtain",
    "refrigerator",
    "shower curtain",
    "toilet",
    "sink",
    "bathtub",
    "otherfurniture",
)

#: Column layout of ScanNet's ``scannetv2-labels.combined.tsv``.
TSV_COLUMNS: tuple[str, ...] = (
    "id",
    "raw_category",
    "category",
    "count",
    "nyu40id",
    "eigen13id",
    "nyuClass",
    "nyu40class",
    "eigen13class",
    "ModelNet40",
    "ModelNet10",
    "ShapeNetCore55",
    "synsetoffset",
    "wnsynsetid",
    "wnsynsetkey",
    "mpcat40",
    "mpcat40index",
)


@dataclass(frozen=True)
class LabelSet:
    """One benchmark's classes: which raw ids are trained, which are stuff (no instances).

    ``sample_key`` names the field of a prepared sample that holds this set's raw ids.
    """

    name: str
    raw_ids: tuple[int, ...]
    names: tuple[str, ...]
    stuff_raw_ids: tuple[int, ...]
    sample_key: str
    #: (group name, raw ids) pairs, e.g. ScanNet200's head / common / tail; empty when none.
    frequency_groups: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        if len(self.raw_ids) != len(self.names):
            raise ValueError(f"{self.name}: {len(self.raw_ids)} ids but {len(self.names)} names")
        if len(set(self.raw_ids)) != len(self.raw_ids) or min(self.raw_ids) < 1:
            raise ValueError(f"{self.name}: raw ids must be unique and positive")
        if not set(self.stuff_raw_ids) <= set(self.raw_ids):
            raise ValueError(f"{self.name}: stuff ids must be among the raw ids")
        grouped = [i for _, ids in self.frequency_groups for i in ids]
        if self.frequency_groups and sorted(grouped) != sorted(self.raw_ids):
            raise ValueError(f"{self.name}: frequency groups must split the raw ids exactly")

    @property
    def num_semantic(self) -> int:
        return len(self.raw_ids)

    @property
    def thing_raw_ids(self) -> tuple[int, ...]:
        return tuple(i for i in self.raw_ids if i not in self.stuff_raw_ids)

    @property
    def thing_names(self) -> tuple[str, ...]:
        stuff = set(self.stuff_raw_ids)
        return tuple(n for i, n in zip(self.raw_ids, self.names) if i not in stuff)

    @property
    def num_instance(self) -> int:
        return len(self.thing_raw_ids)

    @functools.cached_property
    def _semantic_lut(self) -> np.ndarray:
        return _lookup_table(self.raw_ids)

    @functools.cached_property
    def _instance_lut(self) -> np.ndarray:
        return _lookup_table(self.thing_raw_ids)

    def semantic_train_ids(self, raw: np.ndarray) -> np.ndarray:
        """Index in ``raw_ids`` order; -1 (ignore) for 0, unknown or non-benchmark ids."""
        return _apply_lut(self._semantic_lut, raw)

    def class_counts(self, raw: np.ndarray) -> dict[int, int]:
        """Points per benchmark class present, keyed by train id (points outside the benchmark left out).

        The one label statistic: ``prepare`` records it per scene, ``stats`` sums it per data root.
        """
        train = self.semantic_train_ids(raw)
        ids, counts = np.unique(train[train >= 0], return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist()))

    def instance_class_ids(self, raw: np.ndarray) -> np.ndarray:
        """Index among the thing ids; -1 for stuff, 0 and ids outside the benchmark."""
        return _apply_lut(self._instance_lut, raw)

    @overload
    def semantic_raw_id(self, train_id: int) -> int: ...
    @overload
    def semantic_raw_id(self, train_id: np.ndarray) -> np.ndarray: ...
    def semantic_raw_id(self, train_id: Any) -> Any:
        """Back to the raw id a benchmark file expects; arrays map -1 to 0 (unlabelled)."""
        return _index_back(self.raw_ids, train_id, self.name)

    @overload
    def instance_raw_id(self, class_id: int) -> int: ...
    @overload
    def instance_raw_id(self, class_id: np.ndarray) -> np.ndarray: ...
    def instance_raw_id(self, class_id: Any) -> Any:
        """Raw id of an instance class index; arrays map -1 to 0 (unlabelled)."""
        return _index_back(self.thing_raw_ids, class_id, self.name)


def _lookup_table(ids: tuple[int, ...]) -> np.ndarray:
    lut = np.full(max(ids) + 1, -1, dtype=np.int64)
    lut[list(ids)] = np.arange(len(ids))
    lut.flags.writeable = False
    return lut


def _apply_lut(lut: np.ndarray, raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype.kind not in "iu":
        raise TypeError(f"label ids must be integers, got {raw.dtype}")
    raw = raw.astype(np.int64, copy=False)
    inside = (raw >= 0) & (raw < len(lut))
    out = np.full(raw.shape, -1, dtype=np.int64)
    out[inside] = lut[raw[inside]]
    return out


def _index_back(ids: tuple[int, ...], index: Any, name: str) -> Any:
    if np.ndim(index) == 0:
        i = int(index)
        if not 0 <= i < len(ids):
            raise IndexError(f"{name}: class index {i} outside 0..{len(ids) - 1}")
        return ids[i]
    index = np.asarray(index, dtype=np.int64)
    if np.any(index >= len(ids)) or np.any(index < -1):
        raise IndexError(f"{name}: class index outside -1..{len(ids) - 1}")
    table = np.asarray((0,) + ids, dtype=np.int64)
    return table[index + 1]


LABEL_SETS: dict[str, LabelSet] = {
    "scannet200": LabelSet(
        name="scannet200",
        raw_ids=VALID_CLASS_IDS_200,
        names=CLASS_LABELS_200,
        stuff_raw_ids=(1, 3),  # wall, floor: the benchmark's non-object categories
        sample_key="label200",
        frequency_groups=(
            ("head", SCANNET200_HEAD_IDS),
            ("common", SCANNET200_COMMON_IDS),
            ("tail", SCANNET200_TAIL_IDS),
        ),
    ),
    "scannet": LabelSet(
        name="scannet",
        raw_ids=VALID_CLASS_IDS_20,
        names=CLASS_LABELS_20,
        stuff_raw_ids=(1, 2),  # nyu40 wall, floor
        sample_key="label20",
    ),
}


# --------------------------------------------------------------------------- label table (tsv)


def read_labels_tsv(path: str | Path) -> dict[str, tuple[int, int]]:
    """``raw_category -> (id, nyu40id)``: how aggregation label strings become raw ids.

    An empty ``nyu40id`` cell reads as 0 (unlabelled for ScanNet20).
    """
    path = Path(path)
    if not path.is_file():
        raise BifusionError(path, "label table not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BifusionError(path, f"cannot read label table ({exc.__class__.__name__})") from None
    reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = {"id", "raw_category", "nyu40id"} - set(reader.fieldnames or ())
    if missing:
        raise BifusionError(path, f"not a ScanNet label table: missing column(s) {sorted(missing)}")
    table: dict[str, tuple[int, int]] = {}
    for row in reader:
        line = reader.line_num
        name = (row.get("raw_category") or "").strip()
        if not name:
            raise BifusionError(path, f"line {line}: empty raw_category")
        try:
            raw_id = int(row["id"])
            nyu40 = int(row["nyu40id"]) if (row.get("nyu40id") or "").strip() else 0
        except (TypeError, ValueError):
            raise BifusionError(path, f"line {line}: id/nyu40id must be integers") from None
        table.setdefault(name, (raw_id, nyu40))
    if not table:
        raise BifusionError(path, "label table has no rows")
    return table


def write_labels_tsv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows in ScanNet's column layout; each row needs ``id``, ``raw_category``, ``nyu40id``.

    Other columns default to empty (``category`` to the raw category, ``count`` to 1).
    """
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
    writer.writerow(TSV_COLUMNS)
    for row in rows:
        unknown = set(row) - set(TSV_COLUMNS)
        if unknown or not {"id", "raw_category", "nyu40id"} <= set(row):
            raise ValueError(f"label row needs id, raw_category, nyu40id; unknown {sorted(unknown)}")
        values = {"category": row["raw_category"], "count": 1, **row}
        writer.writerow(["" if values.get(c) is None else values.get(c, "") for c in TSV_COLUMNS])
    write_text(path, out.getvalue())
