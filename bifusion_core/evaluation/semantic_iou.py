"""Semantic segmentation scores (IoU, accuracy) following the ScanNet benchmark's confusion rules.

Labels here are contiguous train ids ``0..C-1``. The confusion matrix has one extra column,
``UNKNOWN`` (index ``C``), for predicted ids outside ``0..C-1``: as in the benchmark, such a
prediction is a false negative of its ground-truth class and a false positive of no class, so
a model cannot gain by abstaining and is not double-penalised for it. Matrices of several scenes
are simply added, which is how the benchmark accumulates (scores are computed once, at the end).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BifusionError


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """Count (gt, pred) pairs into a ``(C, C+1)`` int64 matrix; column ``C`` is UNKNOWN.

    Points whose ground truth is ``ignore_index`` are left out. A ground-truth value that is
    neither ``ignore_index`` nor a train id is a label-mapping bug upstream, so it raises rather
    than being silently ignored.
    """
    if num_classes < 1:
        raise BifusionError("num_classes", f"must be >= 1, got {num_classes}")
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise BifusionError("confusion_matrix", f"gt shape {gt.shape} != pred shape {pred.shape}")
    for name, values in (("gt", gt), ("pred", pred)):
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise BifusionError(f"confusion_matrix {name}", f"needs integer ids, got {values.dtype}")
    gt = gt.reshape(-1).astype(np.int64, copy=False)
    pred = pred.reshape(-1).astype(np.int64, copy=False)

    kept = gt != ignore_index
    gt, pred = gt[kept], pred[kept]
    out_of_range = (gt < 0) | (gt >= num_classes)
    if out_of_range.any():
        bad = int(gt[out_of_range][0])
        raise BifusionError(
            "confusion_matrix gt",
            f"id {bad} is neither a train id 0..{num_classes - 1} nor ignore_index {ignore_index}",
        )
    unknown = (pred < 0) | (pred >= num_classes)
    pred = np.where(unknown, num_classes, pred)
    width = num_classes + 1
    counts = np.bincount(gt * width + pred, minlength=num_classes * width)
    return counts.reshape(num_classes, width).astype(np.int64, copy=False)


def semantic_scores(conf: np.ndarray) -> dict[str, Any]:
    """mIoU (official rule), per-class IoU, mean class accuracy and overall accuracy.

    Accepts ``(C, C+1)`` (with the UNKNOWN column) or a plain ``(C, C)`` matrix. The headline
    ``miou`` follows ScanNet's ``evaluate_semantic_label.py``: IoU_c = TP / (TP + FP + FN); a class
    with no ground truth but predicted on valid points gets IoU 0 (every such prediction is an
    FP); a class with neither is NaN and left out (the upstream script crashes there).
    ``miou_gt_classes`` averages only the classes that have ground truth (a named extra: it says
    how well present classes are segmented).
    Accuracies are defined only for classes with ground truth.
    """
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[1] not in (conf.shape[0], conf.shape[0] + 1):
        raise BifusionError("semantic_scores", f"needs a (C, C) or (C, C+1) matrix, got {conf.shape}")
    conf = conf.astype(np.float64)
    num_classes = conf.shape[0]
    true_pos = np.diag(conf[:, :num_classes])
    gt_count = conf.sum(axis=1)  # includes UNKNOWN predictions: they are false negatives
    pred_count = conf[:, :num_classes].sum(axis=0)  # only rows of valid GT: ignored GT is no FP
    union = gt_count + pred_count - true_pos
    has_gt = gt_count > 0
    scored = union > 0  # GT or predictions on valid points

    per_class_iou = np.full(num_classes, np.nan)
    per_class_iou[scored] = true_pos[scored] / union[scored]
    per_class_acc = np.full(num_classes, np.nan)
    per_class_acc[has_gt] = true_pos[has_gt] / gt_count[has_gt]
    total = gt_count.sum()
    return {
        "miou": float(per_class_iou[scored].mean()) if scored.any() else float("nan"),
        "miou_gt_classes": float(per_class_iou[has_gt].mean()) if has_gt.any() else float("nan"),
        "per_class_iou": per_class_iou,
        "macc": float(per_class_acc[has_gt].mean()) if has_gt.any() else float("nan"),
        "per_class_acc": per_class_acc,
        "allacc": float(true_pos.sum() / total) if total > 0 else float("nan"),
    }
