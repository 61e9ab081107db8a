"""Scene-level scoring: one scan's predictions over its elements, scored like the ScanNet benchmark.

An *element* is whatever a protocol scores: a mesh vertex of ``<scene>_vh_clean_2.ply``
(``mesh-vertex``, ``mesh-vertex+segments``), an accumulated observed point
(``observed-points``), or a frame's / window's own points (``frame``, ``window``). Labels are
raw benchmark ids (ScanNet200 tsv ids or nyu40 ids), never train ids, so a ``SceneTruth`` is
exactly what the benchmark's GT files hold.

``SceneScorer`` streams: ``add`` reduces a scan to metric state at once (the benchmark's
per-scan match table for AP, a confusion matrix for mIoU, coverage sums) and keeps nothing
that grows with the number of elements of past scans.

Metrics (``SceneScorer.result``):

* ``instance/ap``, ``instance/ap50``, ``instance/ap25``: the benchmark's per-class AP
  (``instance_ap.py``, identical to ScanNet's script), mean over classes with GT.
* ``instance/ap*_class_agnostic``: the same with every thing class relabelled as one.
* ``instance/ap_head`` / ``_common`` / ``_tail``, the same for ``ap50_*`` and ``ap25_*``, and
  ``semantic/miou_head`` / ``_common`` / ``_tail`` (label sets with frequency groups, i.e.
  ScanNet200, as the benchmark's table has them): mean per-class AP over the group's classes
  that have GT, mean IoU over the group's scored classes (official rule).
* ``instance/mcov_class_agnostic``: mean coverage = mean over GT instances of the best IoU with
  any prediction. ``instance/mrec_class_agnostic``: recall of GT instances at IoU > 0.5 with
  any prediction. Both unweighted (each GT instance counts once, whatever its size), pooled over
  all scans (not a mean of per-scan or per-class values); GT instances and predictions are those
  the benchmark keeps (thing classes, at least ``min_region`` elements).
* ``semantic/miou`` (official rule: a class predicted but absent from the GT gets IoU 0),
  ``semantic/miou_gt_classes`` (classes with GT only), ``semantic/macc``, ``semantic/allacc``.
* stamps: ``protocol``, ``frame_step``, ``num_scans``, ``num_frames`` and any other context given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.labels import LabelSet
from ..errors import BifusionError
from .instance_ap import (
    AGNOSTIC_CLASS_NAME,
    AGNOSTIC_LABEL_ID,
    DEFAULT_MIN_REGION,
    LABEL_DIVISOR,
    InstanceMetrics,
    InstanceSceneResult,
    SceneTable,
    class_agnostic,
    metrics_from_tables,
    nanmean,
    scene_table,
)
from .semantic_iou import confusion_matrix, semantic_scores

PROTOCOLS = ("frame", "window", "mesh-vertex", "mesh-vertex+segments", "observed-points")
STAMPS = ("protocol", "frame_step", "num_scans", "num_frames")
RECALL_IOU = 0.5


@dataclass
class ScenePrediction:
    """One scan's predictions over E elements (mesh vertices or observed points)."""

    scene: str
    masks: np.ndarray  # (K, E) bool
    labels: np.ndarray  # (K,) raw benchmark label ids
    scores: np.ndarray  # (K,) float confidence
    semantic: np.ndarray  # (E,) raw benchmark label id per element, 0 = none


@dataclass
class SceneTruth:
    scene: str
    label_raw: np.ndarray  # (E,) raw benchmark label id, 0 = unannotated
    instance: np.ndarray  # (E,) instance id, 0 = none

    def gt_ids(self) -> np.ndarray:
        """The benchmark's GT encoding ``label_id * 1000 + instance`` (no instance -> 0)."""
        return gt_instance_ids(self.label_raw, self.instance)


@dataclass
class MeshGT:
    """Geometry of a prepared full-mesh GT: what mesh mapping, smoothing and viewers need."""

    vertices: np.ndarray  # (V, 3) float32, world frame of the scan
    segments: np.ndarray  # (V,) int64 contiguous segment id per vertex
    faces: np.ndarray | None = None  # (F, 3) int64 when the prepared file has them
    colors: np.ndarray | None = None  # (V, 3) uint8


def gt_instance_ids(label_raw: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Benchmark GT encoding ``label_id * 1000 + instance`` (elements without instance -> 0)."""
    label_raw = np.asarray(label_raw, dtype=np.int64)
    instance = np.asarray(instance, dtype=np.int64)
    return np.where(instance > 0, label_raw * LABEL_DIVISOR + instance, 0)


def check_scene(pred: ScenePrediction, truth: SceneTruth) -> tuple[np.ndarray, np.ndarray]:
    """Shapes and id ranges the scorer and the exporter rely on -> (masks bool, gt ids)."""
    where = pred.scene or truth.scene or "scene"
    label_raw, instance = np.asarray(truth.label_raw), np.asarray(truth.instance)
    if label_raw.ndim != 1 or instance.shape != label_raw.shape:
        raise BifusionError(where, f"truth label_raw {label_raw.shape} and instance {instance.shape} must be (E,)")
    if not (np.issubdtype(label_raw.dtype, np.integer) and np.issubdtype(instance.dtype, np.integer)):
        raise BifusionError(where, "truth label_raw and instance must be integer arrays")
    if label_raw.size and (label_raw.min() < 0 or instance.min() < 0 or instance.max() >= LABEL_DIVISOR):
        raise BifusionError(where, f"truth ids must be >= 0 and instance ids < {LABEL_DIVISOR}")
    num = len(label_raw)
    masks = np.asarray(pred.masks)
    if masks.ndim != 2 or masks.shape[1] != num:
        raise BifusionError(where, f"prediction masks must be (K, {num}) for {num} elements, got {masks.shape}")
    labels, scores = np.asarray(pred.labels).reshape(-1), np.asarray(pred.scores).reshape(-1)
    if len(labels) != len(masks) or len(scores) != len(masks):
        raise BifusionError(where, f"{len(masks)} masks but {len(labels)} labels and {len(scores)} scores")
    semantic = np.asarray(pred.semantic)
    if semantic.shape != (num,) or (semantic.size and not np.issubdtype(semantic.dtype, np.integer)):
        raise BifusionError(where, f"semantic prediction must be ({num},) integer ids, got {semantic.dtype} {semantic.shape}")
    return (masks if masks.dtype == np.bool_ else masks != 0), gt_instance_ids(label_raw, instance)


class SceneScorer:
    """Streaming benchmark scoring of scans (see the module docstring for the metrics).

    ``context`` is stamped into the result as is (``frame_step``, ``num_frames``, ``split``...);
    ``num_scans`` defaults to the number of ``add`` calls. ``update_context`` changes stamps
    later (a streaming caller learns ``num_frames`` as it goes).
    """

    def __init__(self, label_set: LabelSet, protocol: str, *, min_region: int = DEFAULT_MIN_REGION, **context: Any):
        if protocol not in PROTOCOLS:
            raise BifusionError("protocol", f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if min_region < 1:
            raise BifusionError("min_region", f"must be >= 1, got {min_region}")
        self.labels = label_set
        self.protocol = protocol
        self.min_region = min_region
        self.context: dict[str, Any] = {"frame_step": None, "num_frames": None, **context}
        self._things = tuple(label_set.thing_raw_ids)
        self._tables: list[SceneTable] = []
        self._agnostic_tables: list[SceneTable] = []
        self._confusion = np.zeros((label_set.num_semantic, label_set.num_semantic + 1), np.int64)
        self._coverage_sum = 0.0
        self._recalled = 0
        self._num_gt = 0
        self._scans = 0
        self._cache: tuple[dict[str, Any], dict[str, Any]] | None = None

    def update_context(self, **context: Any) -> None:
        self.context.update(context)
        self._cache = None

    def add(self, pred: ScenePrediction, truth: SceneTruth) -> None:
        masks, gt = check_scene(pred, truth)
        name = pred.scene or truth.scene
        scene = InstanceSceneResult(gt, masks, np.asarray(pred.labels).reshape(-1), np.asarray(pred.scores).reshape(-1), name)
        table = scene_table(scene, self._things, self.min_region, self._scans)
        agnostic = scene_table(class_agnostic([scene], self._things)[0], [AGNOSTIC_LABEL_ID], self.min_region, self._scans)
        gt_train = self.labels.semantic_train_ids(np.asarray(truth.label_raw))
        pred_train = self.labels.semantic_train_ids(np.asarray(pred.semantic))
        self._confusion += confusion_matrix(gt_train, pred_train, self.labels.num_semantic)
        # Coverage from the class-agnostic table: its IoU is that of kept predictions vs GT.
        found = agnostic.iou[:, ~agnostic.gt_ignored]
        best = found.max(axis=0) if len(found) else np.zeros(found.shape[1])
        self._coverage_sum += float(best.sum())
        self._recalled += int((best > RECALL_IOU).sum())
        self._num_gt += int(best.size)
        self._tables.append(table)
        self._agnostic_tables.append(agnostic)
        self._scans += 1
        self._cache = None

    def state_arrays(self) -> list[np.ndarray]:
        """Every array the scorer holds (its whole memory beyond a few scalars)."""
        arrays = [self._confusion]
        for table in self._tables + self._agnostic_tables:
            arrays.extend(table.arrays())
        return arrays

    def result(self) -> dict[str, Any]:
        """Flat metrics dict: stamps first, then the benchmark's numbers (floats, NaN = undefined)."""
        return dict(self._compute()[0])

    def per_class(self) -> dict[str, Any]:
        """``{"ap": {name: (ap, ap50, ap25)}, "iou": {name: iou}}`` for classes that are scored."""
        return self._compute()[1]

    def _compute(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._cache is None:
            self._cache = self._summarise()
        return self._cache

    def _summarise(self) -> tuple[dict[str, Any], dict[str, Any]]:
        per_class = metrics_from_tables(self._tables, self.labels.thing_names)
        agnostic = metrics_from_tables(self._agnostic_tables, [AGNOSTIC_CLASS_NAME])
        semantic = semantic_scores(self._confusion)
        out: dict[str, Any] = {"protocol": self.protocol, "num_scans": self._scans}
        out.update(self.context)
        out = {k: out[k] for k in STAMPS if k in out} | {k: v for k, v in out.items() if k not in STAMPS}
        out |= {
            "instance/ap": per_class.ap,
            "instance/ap50": per_class.ap50,
            "instance/ap25": per_class.ap25,
            "instance/ap_class_agnostic": agnostic.ap,
            "instance/ap50_class_agnostic": agnostic.ap50,
            "instance/ap25_class_agnostic": agnostic.ap25,
        }
        out |= self._group_means(per_class, semantic["per_class_iou"])
        out |= {
            "instance/mcov_class_agnostic": self._coverage_sum / self._num_gt if self._num_gt else float("nan"),
            "instance/mrec_class_agnostic": self._recalled / self._num_gt if self._num_gt else float("nan"),
            "semantic/miou": semantic["miou"],
            "semantic/miou_gt_classes": semantic["miou_gt_classes"],
            "semantic/macc": semantic["macc"],
            "semantic/allacc": semantic["allacc"],
        }
        details = {
            "ap": {n: v for n, v in per_class.per_class.items() if not np.isnan(v[0])},
            "iou": {n: float(v) for n, v in zip(self.labels.names, semantic["per_class_iou"]) if not np.isnan(v)},
        }
        return out, details

    def _group_means(self, per_class: InstanceMetrics, class_iou: np.ndarray) -> dict[str, float]:
        """Per frequency group: mean per-class AP / AP50 / AP25 over its thing classes with GT, and
        mean IoU over its scored classes (NaN where a group has none)."""
        class_ap = dict(zip(self._things, per_class.per_class.values()))
        iou = dict(zip(self.labels.raw_ids, class_iou))
        out = {}
        for group, ids in self.labels.frequency_groups:
            for k, name in enumerate(("ap", "ap50", "ap25")):
                out[f"instance/{name}_{group}"] = nanmean([class_ap[i][k] for i in ids if i in class_ap])
        for group, ids in self.labels.frequency_groups:
            out[f"semantic/miou_{group}"] = nanmean([iou[i] for i in ids if i in iou])
        return out


def load_mesh_truth(gt_npz_path: str | Path, label_set: LabelSet) -> tuple[SceneTruth, MeshGT]:
    """A prepared full-mesh GT (``DATA/gt/<scene>.npz``, vertex order of the mesh) as truth + geometry."""
    path = Path(gt_npz_path)
    if not path.is_file():
        raise BifusionError(path, "no full-mesh ground truth here; prepare the scan from ScanNet or synthetic data first")
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # a truncated or foreign file: zipfile, pickle or value errors
        raise BifusionError(path, f"cannot read the ground truth ({exc.__class__.__name__})") from None
    missing = [k for k in ("vertices", label_set.sample_key, "instance", "segments") if k not in arrays]
    if missing:
        raise BifusionError(path, f"not a bifusion mesh ground truth: missing {', '.join(missing)}")
    vertices = arrays["vertices"].astype(np.float32, copy=False)
    num = len(vertices)
    fields = {k: arrays[k].reshape(-1) for k in (label_set.sample_key, "instance", "segments")}
    for key, values in fields.items():
        if len(values) != num:
            raise BifusionError(path, f"{key} has {len(values)} entries for {num} vertices")
    truth = SceneTruth(
        scene=path.stem,
        label_raw=fields[label_set.sample_key].astype(np.int64),
        instance=fields["instance"].astype(np.int64),
    )
    faces = arrays.get("faces")
    colors = arrays.get("colors")
    mesh = MeshGT(
        vertices=vertices,
        segments=fields["segments"].astype(np.int64),
        faces=None if faces is None else faces.astype(np.int64).reshape(-1, 3),
        colors=None if colors is None else colors.astype(np.uint8),
    )
    return truth, mesh


def export_scene(export_dir: str | Path, pred: ScenePrediction, truth: SceneTruth) -> None:
    """One scan in the benchmark's files under ``export_dir`` (layout in ``export.py``)."""
    from .export import write_scene

    masks, gt = check_scene(pred, truth)
    write_scene(Path(export_dir), pred.scene or truth.scene, masks, pred.labels, pred.scores, pred.semantic, gt, truth.label_raw)
