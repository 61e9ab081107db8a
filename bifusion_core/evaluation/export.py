"""Benchmark submission files: writers in ScanNet's 3D formats and readers with its parsing rules.

Formats (one line per mesh vertex unless stated):

* semantic ``<dir>/<scene>.txt``: a label id per vertex.
* instance GT ``<gt_dir>/<scene>.txt``: ``label_id * 1000 + instance`` per vertex.
* instance predictions ``<pred_dir>/<scene>.txt``: one line per instance,
  ``pred_mask/<scene>_<k>.txt <label_id> <confidence>``; each mask file holds 0/1 per vertex.
  Masks live in a subfolder because the benchmark treats every top-level ``.txt`` as a scene.

An export folder (``write_scene``) holds ``instance/pred`` (what the instance benchmark accepts),
``instance/gt``, ``semantic/pred`` (what the semantic benchmark accepts) and ``semantic/gt``.

The readers follow the benchmark script (``split(' ')`` into exactly three tokens, label via
``int(float(.))``, mask paths relative and inside ``pred_dir``, the last line wins for a mask
path listed twice, non-zero mask values are inside) so that export -> read -> evaluate gives the
in-memory numbers; anything the script would choke on raises ``BifusionError(file, problem)``.
Confidences are written with ``repr`` so they read back bit-identical (ranking ties survive).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..atomic_io import write_bytes
from ..errors import BifusionError

MASK_SUBDIR = "pred_mask"
INSTANCE_PRED, INSTANCE_GT = "instance/pred", "instance/gt"
SEMANTIC_PRED, SEMANTIC_GT = "semantic/pred", "semantic/gt"


# ----------------------------------------------------------------------------- writers


def write_instance_predictions(
    pred_dir: str | Path,
    scene: str,
    masks: np.ndarray,
    label_ids: np.ndarray,
    scores: np.ndarray,
) -> Path:
    """Write one scene's instance predictions; returns the scene's prediction file.

    Mask files are written before the scene file, so a reader never sees a listing whose
    masks are missing. Mask files of an earlier, longer export of the scene are left in place;
    nothing refers to them.
    """
    _check_scene(scene)
    masks = np.asarray(masks)
    label_ids = np.asarray(label_ids).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 2 or len(label_ids) != len(masks) or len(scores) != len(masks):
        raise BifusionError(
            scene,
            f"need masks (K, N) with K labels and K scores, got {masks.shape}, {len(label_ids)} labels, {len(scores)} scores",
        )
    if not np.isfinite(scores).all():
        raise BifusionError(scene, "confidences must be finite")
    pred_dir = Path(pred_dir)
    lines = []
    for k, (mask, label, score) in enumerate(zip(masks, label_ids.tolist(), scores.tolist())):
        relative = f"{MASK_SUBDIR}/{scene}_{k}.txt"
        write_bytes(pred_dir / relative, _mask_bytes(mask))
        lines.append(f"{relative} {int(label)} {score!r}\n")
    path = pred_dir / f"{scene}.txt"
    write_bytes(path, "".join(lines).encode())
    return path


def write_scene(
    root: str | Path,
    scene: str,
    masks: np.ndarray,
    label_ids: np.ndarray,
    scores: np.ndarray,
    semantic_ids: np.ndarray,
    gt_ids: np.ndarray,
    gt_label_ids: np.ndarray,
) -> None:
    """One scene's predictions and GT in an export folder's four sub-folders (raw label ids)."""
    root = Path(root)
    write_instance_predictions(root / INSTANCE_PRED, scene, masks, label_ids, scores)
    write_instance_gt(root / INSTANCE_GT, scene, gt_ids)
    write_semantic(root / SEMANTIC_PRED, scene, semantic_ids)
    write_semantic(root / SEMANTIC_GT, scene, gt_label_ids)


def write_instance_gt(gt_dir: str | Path, scene: str, gt_ids: np.ndarray) -> Path:
    """Write ``label_id * 1000 + instance`` per vertex to ``gt_dir/<scene>.txt``."""
    return _write_ids(Path(gt_dir), scene, gt_ids)


def write_semantic(out_dir: str | Path, scene: str, label_ids: np.ndarray) -> Path:
    """Write one benchmark label id per vertex to ``out_dir/<scene>.txt`` (ids, not train ids)."""
    return _write_ids(Path(out_dir), scene, label_ids)


def _check_scene(scene: str) -> None:
    """A scene name ends up in file names and in space-separated lines."""
    if not scene or any(c.isspace() for c in scene) or "/" in scene or "\\" in scene:
        raise BifusionError(repr(scene), "scene name must be non-empty, without spaces or slashes")


def _mask_bytes(mask: np.ndarray) -> bytes:
    """'0\\n'/'1\\n' per vertex via a fixed-width byte array: no Python loop over 100k points."""
    return np.where(np.asarray(mask) != 0, b"1\n", b"0\n").astype("S2").tobytes()


def _write_ids(folder: Path, scene: str, ids: np.ndarray) -> Path:
    _check_scene(scene)
    ids = np.asarray(ids).reshape(-1)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise BifusionError(scene, f"ids must be integers, got {ids.dtype}")
    path = folder / f"{scene}.txt"
    write_bytes(path, "".join(f"{v}\n" for v in ids.tolist()).encode())
    return path


# ----------------------------------------------------------------------------- readers


def read_ids(path: str | Path) -> np.ndarray:
    """One integer per line (the benchmark's ``load_ids``) as int64.

    Plain files (``[-]digits`` lines ending in ``\\n``, as every writer here and the benchmark's
    own produce) are parsed in bulk by ``parse_int_lines``; anything else goes through
    ``splitlines`` + ``np.array``, which decides exactly as the benchmark does.
    """
    path = Path(path)
    if not path.is_file():
        raise BifusionError(path, "file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BifusionError(path, f"cannot read ({exc.__class__.__name__}: {exc})") from None
    values = parse_int_lines(data)
    if values is not None:
        return values
    lines = _read_lines(path)
    try:
        return np.array(lines, dtype=np.int64)
    except (ValueError, OverflowError):
        for number, line in enumerate(lines, start=1):
            try:
                int(line)
            except ValueError:
                raise BifusionError(path, f"line {number}: {line!r} is not an integer") from None
        raise BifusionError(path, "values out of the int64 range") from None


_NEWLINE, _MINUS, _ZERO, _NINE = ord("\n"), ord("-"), ord("0"), ord("9")
_MAX_DIGITS = 18  # 10**18 < 2**63: no line of the bulk path can overflow int64
_POWERS_OF_TEN = 10 ** np.arange(_MAX_DIGITS, dtype=np.int64)


def parse_int_lines(data: bytes) -> np.ndarray | None:
    """``[-]digits`` per ``\\n``-terminated line -> int64, with numpy only; None for any other text.

    A 150k-vertex mask file ("0\\n"/"1\\n" per vertex) is a strided compare; other files get one
    place-value sum per line. None (empty lines, spaces, ``\\r``, ``+``, long numbers...) leaves the
    decision to the line-by-line reader, so what is accepted and its value never change.
    """
    buf = np.frombuffer(data, np.uint8)
    if buf.size == 0:
        return np.zeros(0, np.int64)
    if buf[-1] != _NEWLINE:
        buf = np.append(buf, np.uint8(_NEWLINE))
    if buf.size % 2 == 0:  # fixed width: one digit 0/1 and a newline per line
        digits = buf[0::2]
        if (buf[1::2] == _NEWLINE).all() and ((digits | 1) == _ZERO + 1).all():
            return (digits - _ZERO).astype(np.int64)
    newline = buf == _NEWLINE
    digit = (buf >= _ZERO) & (buf <= _NINE)
    minus = buf == _MINUS
    if not (digit | newline | minus).all():
        return None
    ends = np.flatnonzero(newline)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts
    if lengths.min() < 1 or lengths.max() > _MAX_DIGITS:
        return None
    signs = minus[starts]
    if minus.sum() != signs.sum() or not digit[starts[signs] + 1].all():
        return None  # a minus inside a line, or a line that is only "-"
    # place value of each byte: its distance to the end of its line (newlines: masked out)
    exponent = np.repeat(ends, lengths + 1) - 1 - np.arange(buf.size)
    contribution = np.where(digit, (buf.astype(np.int64) - _ZERO) * _POWERS_OF_TEN[np.clip(exponent, 0, None)], 0)
    values = np.add.reduceat(contribution, starts)
    values[signs] *= -1
    return values


def read_instance_predictions(
    pred_dir: str | Path, scene: str, num_points: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``pred_dir/<scene>.txt`` and its masks -> (masks (K,N) bool, labels (K,), scores (K,)).

    ``num_points`` (the GT vertex count) checks every mask's length and gives the shape of an
    empty prediction; without it, all masks must agree and an empty file gives (0, 0).
    Predictions are returned in file order (first appearance of each mask path), as the
    benchmark iterates them.
    """
    _check_scene(scene)
    pred_dir = Path(pred_dir)
    listing = pred_dir / f"{scene}.txt"
    root = os.path.abspath(pred_dir)
    entries: dict[str, tuple[int, float]] = {}
    for number, line in enumerate(_read_lines(listing), start=1):
        parts = line.split(" ")
        if len(parts) != 3:
            raise BifusionError(
                listing,
                f"line {number}: expected '<mask path> <label id> <confidence>' separated by single spaces, got {line!r}",
            )
        relative, label_text, conf_text = parts
        if os.path.isabs(relative):
            raise BifusionError(listing, f"line {number}: mask path {relative!r} must be relative")
        mask_path = os.path.abspath(os.path.join(os.path.dirname(listing), relative))
        if os.path.commonpath([mask_path, root]) != root:
            raise BifusionError(listing, f"line {number}: mask path {relative!r} points outside {pred_dir}")
        try:
            label = int(float(label_text))
            confidence = float(conf_text)
        except (ValueError, OverflowError):
            raise BifusionError(
                listing,
                f"line {number}: label {label_text!r} / confidence {conf_text!r} not numbers",
            ) from None
        if math.isnan(confidence):
            raise BifusionError(listing, f"line {number}: confidence is NaN")
        entries[mask_path] = (label, confidence)  # a repeated path keeps its last line

    masks = []
    for mask_path in entries:
        values = read_ids(mask_path)
        expected = num_points if num_points is not None else len(masks[0]) if masks else None
        if expected is not None and len(values) != expected:
            raise BifusionError(mask_path, f"{len(values)} lines, expected {expected} (one per vertex)")
        masks.append(values != 0)
    width = num_points if num_points is not None else 0
    mask_array = np.stack(masks) if masks else np.zeros((0, width), dtype=bool)
    labels = np.array([e[0] for e in entries.values()], dtype=np.int64)
    scores = np.array([e[1] for e in entries.values()], dtype=np.float64)
    return mask_array, labels, scores


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise BifusionError(path, "file not found")
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BifusionError(path, f"cannot read ({exc.__class__.__name__}: {exc})") from None
