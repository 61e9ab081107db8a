"""Label sets (raw ids <-> train ids) and the ScanNet label table reader/writer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bifusion_core.data.labels import (
    CLASS_LABELS_20,
    CLASS_LABELS_200,
    LABEL_SETS,
    TSV_COLUMNS,
    VALID_CLASS_IDS_20,
    VALID_CLASS_IDS_200,
    read_labels_tsv,
    write_labels_tsv,
)
from bifusion_core.errors import BifusionError


def test_benchmark_constants_match_the_official_lists() -> None:
    assert len(VALID_CLASS_IDS_200) == len(set(CLASS_LABELS_200)) == 200
    assert list(VALID_CLASS_IDS_200) == sorted(VALID_CLASS_IDS_200)
    assert VALID_CLASS_IDS_200[:3] == (1, 2, 3) and VALID_CLASS_IDS_200[-1] == 1191
    assert CLASS_LABELS_200[:3] == ("wall", "chair", "floor") and CLASS_LABELS_200[-1] == "mattress"
    assert dict(zip(VALID_CLASS_IDS_200, CLASS_LABELS_200))[31] == "towel"
    assert len(VALID_CLASS_IDS_20) == len(CLASS_LABELS_20) == 20
    assert dict(zip(VALID_CLASS_IDS_20, CLASS_LABELS_20))[39] == "otherfurniture"


def test_scannet200_mapping() -> None:
    labels = LABEL_SETS["scannet200"]
    assert (labels.num_semantic, labels.num_instance, labels.sample_key) == (200, 198, "label200")
    raw = np.array([0, 1, 2, 3, 1191, 12, 99999, -5, 13])
    assert labels.semantic_train_ids(raw).tolist() == [-1, 0, 1, 2, 199, -1, -1, -1, 11]
    # wall and floor are stuff: no instance class; chair is the first thing class
    assert labels.instance_class_ids(raw).tolist() == [-1, -1, 0, -1, 197, -1, -1, -1, 9]
    assert labels.thing_raw_ids[0] == 2 and 1 not in labels.thing_raw_ids and 3 not in labels.thing_raw_ids


def test_scannet20_mapping() -> None:
    labels = LABEL_SETS["scannet"]
    assert (labels.num_semantic, labels.num_instance, labels.sample_key) == (20, 18, "label20")
    raw = np.array([[1, 2, 3], [13, 39, 40]], dtype=np.int32)
    assert labels.semantic_train_ids(raw).tolist() == [[0, 1, 2], [-1, 19, -1]]
    assert labels.instance_class_ids(raw).tolist() == [[-1, -1, 0], [-1, 17, -1]]


@pytest.mark.parametrize("name", sorted(LABEL_SETS))
def test_train_ids_map_back_to_raw_ids(name: str) -> None:
    labels = LABEL_SETS[name]
    train = np.arange(labels.num_semantic)
    assert labels.semantic_raw_id(train).tolist() == list(labels.raw_ids)
    assert [labels.semantic_raw_id(int(t)) for t in train] == list(labels.raw_ids)
    things = np.arange(labels.num_instance)
    assert labels.instance_raw_id(things).tolist() == list(labels.thing_raw_ids)
    assert labels.instance_class_ids(labels.instance_raw_id(things)).tolist() == things.tolist()
    # -1 (ignore / no class) maps to raw id 0 (unlabelled) in arrays, an error for a single index
    assert labels.semantic_raw_id(np.array([-1, 0])).tolist() == [0, labels.raw_ids[0]]
    with pytest.raises(IndexError):
        labels.semantic_raw_id(labels.num_semantic)


def test_label_set_is_immutable_and_rejects_floats() -> None:
    labels = LABEL_SETS["scannet"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        labels.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        labels.semantic_train_ids(np.array([1.0, 2.0]))


def test_tsv_round_trip(tmp_path: Path) -> None:
    rows = [
        {"id": 1, "raw_category": "wall", "nyu40id": 1, "nyu40class": "wall"},
        {"id": 56, "raw_category": "trash can", "category": "trash can", "nyu40id": 39, "count": 7},
        {"id": 1191, "raw_category": "mattress", "nyu40id": 4, "mpcat40": "bed"},
    ]
    path = tmp_path / "labels.tsv"
    write_labels_tsv(path, rows)
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(TSV_COLUMNS)
    assert all(len(line.split("\t")) == len(TSV_COLUMNS) for line in lines)
    assert lines[2].split("\t")[:5] == ["56", "trash can", "trash can", "7", "39"]
    assert read_labels_tsv(path) == {"wall": (1, 1), "trash can": (56, 39), "mattress": (1191, 4)}


def test_tsv_reader_accepts_scannet_layout_with_empty_nyu40(tmp_path: Path) -> None:
    path = tmp_path / "labels.tsv"
    path.write_text(
        "\t".join(TSV_COLUMNS)
        + "\n"
        + "\t".join(["13", "pillow", "pillow", "2", "18"] + [""] * 12)
        + "\n"
        + "\t".join(["1163", "object", "object", "1", ""] + [""] * 12)
        + "\n"
    )
    assert read_labels_tsv(path) == {"pillow": (13, 18), "object": (1163, 0)}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("id\tcategory\n1\twall\n", "missing column"),
        ("id\traw_category\tnyu40id\nfirst\twall\t1\n", "line 2"),
        ("id\traw_category\tnyu40id\n", "no rows"),
        ("id\traw_category\tnyu40id\n5\t\t1\n", "empty raw_category"),
    ],
)
def test_bad_tsv_is_a_one_line_error_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(BifusionError, match=problem) as error:
        read_labels_tsv(path)
    assert error.value.where == str(path) and "\n" not in str(error.value)


def test_missing_tsv(tmp_path: Path) -> None:
    with pytest.raises(BifusionError, match="not found"):
        read_labels_tsv(tmp_path / "nowhere.tsv")
