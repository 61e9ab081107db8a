"""Fast paths of scoring and mesh mapping give exactly what the plain versions they replaced gave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bifusion_core.errors import BifusionError
from bifusion_core.evaluation.export import parse_int_lines, read_ids
from bifusion_core.evaluation.instance_ap import _distinct_masks
from bifusion_core.online.mesh_map import smooth_masks


def plain_ids(text: str) -> np.ndarray:
    """The benchmark's ``load_ids``: splitlines, then numpy's conversion."""
    return np.array(text.splitlines(), dtype=np.int64)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0\n",
        "1\n0\n1\n",
        "1\n0",
        "7\n",
        "0\n1\n2\n",
        "-3\n12\n0\n",
        "007\n-0\n",
        "5001\n40012\n0\n",
        "999999999999999999\n-99999999999999999\n",
    ],
)
def test_bulk_parser_matches_plain_parse(text: str):
    values = parse_int_lines(text.encode())
    assert values is not None and values.dtype == np.int64
    assert values.tolist() == plain_ids(text).tolist()


@pytest.mark.parametrize(
    "text", ["1\n\n0\n", " 1\n", "1\r\n0\r\n", "+1\n", "1-\n", "-\n", "1.0\n", "\n", "é\n", "1234567890123456789\n"]
)
def test_bulk_parser_declines_other_text(text: str):
    assert parse_int_lines(text.encode()) is None


def test_bulk_parser_random_files():
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = rng.integers(-(10**12), 10**12, int(rng.integers(1, 300))) // rng.choice([1, 10**6, 10**11])
        text = "".join(f"{v}\n" for v in values.tolist())
        assert parse_int_lines(text.encode()).tolist() == values.tolist()
    mask = rng.random(10_000) < 0.3
    text = "".join("1\n" if m else "0\n" for m in mask)
    assert (parse_int_lines(text.encode()) != 0).tolist() == mask.tolist()


def test_read_ids_keeps_the_plain_reader_for_other_text(tmp_path: Path):
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"3\r\n-4\r\n")
    assert read_ids(crlf).tolist() == [3, -4]  # declined by the bulk parser, read as before
    bad = tmp_path / "bad.txt"
    bad.write_text("1\nx\n")
    with pytest.raises(BifusionError, match=r"line 2: 'x' is not an integer"):
        read_ids(bad)
    with pytest.raises(BifusionError, match="file not found"):
        read_ids(tmp_path / "missing.txt")


def distinct_by_sorting(masks, labels, scores):
    """The de-duplication as it was: np.unique over (label bytes, packed mask) rows."""
    order = np.argsort(-scores, kind="stable")
    rows = np.packbits(masks[order] != 0, axis=1)
    keys = np.concatenate([labels[order, None].view(np.uint8).reshape(len(order), -1), rows], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    keep = np.sort(order[first])
    return masks[keep], labels[keep], scores[keep]


def test_distinct_masks_same_as_sorting_rows():
    rng = np.random.default_rng(1)
    for _ in range(100):
        k, n = int(rng.integers(2, 30)), int(rng.integers(1, 40))
        masks = rng.random((k, n)) < 0.5
        copies = rng.integers(0, k, k // 2)
        masks[copies] = masks[rng.integers(0, k, len(copies))]  # duplicated masks ...
        labels = rng.integers(0, 3, k).astype(np.int64)  # ... under the same or another label
        scores = rng.choice([0.1, 0.5, 0.9], k) if rng.random() < 0.5 else rng.random(k)  # with ties
        for ours, plain in zip(_distinct_masks(masks, labels, scores), distinct_by_sorting(masks, labels, scores)):
            assert np.array_equal(ours, plain)


def smooth_by_loop(masks, segments):
    """Segment smoothing as it was: one bincount per mask."""
    _, seg_of = np.unique(np.asarray(segments, np.int64), return_inverse=True)
    size = np.bincount(seg_of)
    out = np.empty_like(masks, dtype=bool)
    for k, mask in enumerate(masks):
        out[k] = (np.bincount(seg_of[mask], minlength=len(size)) * 2 > size)[seg_of]
    return out


def test_smooth_masks_same_as_loop():
    rng = np.random.default_rng(2)
    for _ in range(100):
        v, k = int(rng.integers(1, 60)), int(rng.integers(0, 6))
        segments = rng.integers(0, 12, v) * 5 + 3  # sparse, unordered segment ids
        masks = rng.random((k, v)) < rng.random()
        assert np.array_equal(smooth_masks(masks, segments), smooth_by_loop(masks, segments))
    assert smooth_masks(np.zeros((0, 4), bool), np.arange(4)).shape == (0, 4)
