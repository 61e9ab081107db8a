"""Independent, file-based ScanNet evaluator: a plain cross-check of bifusion's own scores.

Reads an export folder as written by ``bifusion eval --export`` / ``scene_eval.export_scene``:

    instance/pred/<scene>.txt   "pred_mask/<scene>_<k>.txt <label id> <confidence>" per instance
    instance/gt/<scene>.txt     label_id * 1000 + instance per vertex
    semantic/pred/<scene>.txt   label id per vertex
    semantic/gt/<scene>.txt     label id per vertex

and scores it the way ScanNet's ``evaluate_semantic_instance.py`` and
``evaluate_semantic_label.py`` do, with the same data flow and loops (per scene: GT instances
per class, predictions per class, intersections per (prediction, GT) pair; per threshold and
class: a greedy pass over GT instances, then false positives, then the trapezoidal AP). It
uses numpy only and shares no code with ``bifusion_core.evaluation``, so agreement between the
two is evidence, not tautology. Slow by design (Python loops); fine for tests and small sets.

Usage: ``python bench/reference_eval.py EXPORT_DIR [--benchmark scannet200|scannet]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)  # as the benchmark builds them
MIN_REGION = 100
DIVISOR = 1000
#: the summary figures ``evaluate_export`` re-scores (what bifusion's scorer is compared on)
METRICS = (
    "instance/ap",
    "instance/ap50",
    "instance/ap25",
    "instance/ap_class_agnostic",
    "instance/ap50_class_agnostic",
    "instance/ap25_class_agnostic",
    "semantic/miou",
)


def read_ints(path: Path) -> np.ndarray:
    with open(path) as handle:
        return np.array([int(line) for line in handle.read().splitlines()], dtype=np.int64)


def read_predictions(pred_dir: Path, scene: str) -> list[dict]:
    """Listing of one scene; a mask path listed twice keeps its last line (a dict keyed by path)."""
    listing = pred_dir / f"{scene}.txt"
    by_path: dict[str, dict] = {}
    with open(listing) as handle:
        for line in handle.read().splitlines():
            parts = line.split(" ")
            if len(parts) != 3:
                raise ValueError(f"{listing}: bad line {line!r}")
            path = os.path.abspath(os.path.join(pred_dir, parts[0]))
            by_path[path] = {"file": path, "label": int(float(parts[1])), "confidence": float(parts[2])}
    return list(by_path.values())


def scene_matches(gt_ids: np.ndarray, predictions: list[dict], classes: dict[int, str], min_region: int) -> dict:
    """GT and prediction instances of one scene, per class name, with their pairwise intersections."""
    gt = {name: [] for name in classes.values()}
    for inst_id in np.unique(gt_ids):
        if inst_id == 0 or inst_id // DIVISOR not in classes:
            continue
        gt[classes[inst_id // DIVISOR]].append(
            {"id": int(inst_id), "size": int(np.count_nonzero(gt_ids == inst_id)), "matched_pred": []}
        )
    void = ~np.isin(gt_ids // DIVISOR, list(classes))
    pred = {name: [] for name in classes.values()}
    for p in predictions:
        if p["label"] not in classes:
            continue
        mask = read_ints(Path(p["file"])) != 0
        if len(mask) != len(gt_ids):
            raise ValueError(f"{p['file']}: {len(mask)} lines for {len(gt_ids)} vertices")
        size = int(np.count_nonzero(mask))
        if size < min_region:
            continue
        name = classes[p["label"]]
        entry = {
            "file": p["file"],
            "confidence": p["confidence"],
            "size": size,
            "void": int(np.count_nonzero(mask & void)),
            "matched_gt": [],
        }
        for g in gt[name]:
            inter = int(np.count_nonzero((gt_ids == g["id"]) & mask))
            if inter > 0:
                g["matched_pred"].append({**entry, "intersection": inter})
                entry["matched_gt"].append({**g, "intersection": inter})
        pred[name].append(entry)
    return {"gt": gt, "pred": pred}


def average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_fn: int) -> float:
    order = np.argsort(y_score)
    scores, true = y_score[order], y_true[order]
    cumsum = np.cumsum(true)
    _, unique_idx = np.unique(scores, return_index=True)
    n_examples, n_true = len(scores), (cumsum[-1] if len(cumsum) else 0)
    precision = np.zeros(len(unique_idx) + 1)
    recall = np.zeros(len(unique_idx) + 1)
    cumsum = np.append(cumsum, 0)
    for i, start in enumerate(unique_idx):
        below = cumsum[start - 1]  # start == 0 reads the appended 0
        tp = n_true - below
        fp = n_examples - start - tp
        fn = below + hard_fn
        precision[i] = tp / (tp + fp)
        recall[i] = tp / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0
    padded = np.concatenate(([recall[0]], recall, [0.0]))
    widths = np.convolve(padded, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, widths))


def instance_ap(matches: dict[str, dict], class_names: list[str], min_region: int) -> np.ndarray:
    """(classes, thresholds) AP table, NaN where a class has no GT."""
    table = np.zeros((len(class_names), len(OVERLAPS)))
    for oi, overlap in enumerate(OVERLAPS):
        visited = {p["file"]: False for m in matches.values() for ps in m["pred"].values() for p in ps}
        for ci, name in enumerate(class_names):
            y_true, y_score, hard_fn, has_gt, has_pred = [], [], 0, False, False
            for m in matches.values():
                preds = m["pred"][name]
                gts = [g for g in m["gt"][name] if g["size"] >= min_region]
                has_gt |= bool(gts)
                has_pred |= bool(preds)
                cur_true = [1.0] * len(gts)
                cur_score = [-math.inf] * len(gts)
                cur_match = [False] * len(gts)
                for gi, g in enumerate(gts):
                    found = False
                    for p in g["matched_pred"]:
                        if visited[p["file"]]:
                            continue
                        iou = p["intersection"] / (g["size"] + p["size"] - p["intersection"])
                        if iou > overlap:
                            if cur_match[gi]:
                                cur_true.append(0.0)
                                cur_score.append(min(cur_score[gi], p["confidence"]))
                                cur_match.append(True)
                                cur_score[gi] = max(cur_score[gi], p["confidence"])
                            else:
                                found = True
                                cur_match[gi] = True
                                cur_score[gi] = p["confidence"]
                                visited[p["file"]] = True
                    if not found:
                        hard_fn += 1
                y_true += [t for t, keep in zip(cur_true, cur_match) if keep]
                y_score += [s for s, keep in zip(cur_score, cur_match) if keep]
                for p in preds:
                    ious = [g["intersection"] / (g["size"] + p["size"] - g["intersection"]) for g in p["matched_gt"]]
                    if any(iou > overlap for iou in ious):
                        continue
                    ignored = p["void"] + sum(g["intersection"] for g in p["matched_gt"] if g["size"] < min_region)
                    if ignored / p["size"] <= overlap:
                        y_true.append(0.0)
                        y_score.append(p["confidence"])
            if has_gt and has_pred:
                table[ci, oi] = average_precision(np.array(y_true), np.array(y_score), hard_fn)
            elif has_gt:
                table[ci, oi] = 0.0
            else:
                table[ci, oi] = math.nan
    return table


def summarise(table: np.ndarray) -> dict[str, float]:
    def nanmean(values: np.ndarray) -> float:
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else math.nan

    per_class_ap = np.array([nanmean(row[:-1]) if not np.isnan(row[:-1]).all() else math.nan for row in table])
    return {"ap": nanmean(per_class_ap), "ap50": nanmean(table[:, 0]), "ap25": nanmean(table[:, -1])}


def semantic_iou(gt_dir: Path, pred_dir: Path, class_ids: list[int]) -> tuple[float, np.ndarray]:
    """Official semantic rule: confusion over valid GT vertices; unknown predictions only count as FN."""
    index = {c: i for i, c in enumerate(class_ids)}
    unknown = len(class_ids)
    conf = np.zeros((len(class_ids), len(class_ids) + 1), dtype=np.int64)
    for gt_file in sorted(gt_dir.glob("*.txt")):
        gt, pred = read_ints(gt_file), read_ints(pred_dir / gt_file.name)
        for g, p in zip(gt.tolist(), pred.tolist()):
            if g in index:
                conf[index[g], index.get(p, unknown)] += 1
    ious = np.full(len(class_ids), math.nan)
    for i in range(len(class_ids)):
        tp = conf[i, i]
        fn = conf[i, :].sum() - tp
        fp = conf[:, i].sum() - tp
        if tp + fp + fn > 0:
            ious[i] = tp / (tp + fp + fn)
    return float(np.nanmean(ious)), ious


def distinct_objects(predictions: list[dict]) -> list[dict]:
    """Class-agnostic: a mask listed under several thing classes is one object, at its best confidence."""
    best: dict[bytes, dict] = {}
    others = []
    for p in predictions:
        if p["label"] == 0:
            others.append(p)
            continue
        key = Path(p["file"]).read_bytes()
        if key not in best or p["confidence"] > best[key]["confidence"]:
            best[key] = p
    return list(best.values()) + others


def evaluate_export(export_dir: str | Path, class_ids: list[int], thing_ids: list[int], min_region: int = MIN_REGION) -> dict:
    """Per-class and class-agnostic AP / AP50 / AP25 and mIoU of an export folder."""
    root = Path(export_dir)
    pred_dir, gt_dir = root / "instance" / "pred", root / "instance" / "gt"
    per_class, agnostic = {}, {}
    for gt_file in sorted(gt_dir.glob("*.txt")):
        scene = gt_file.stem
        if not (pred_dir / f"{scene}.txt").is_file():
            continue  # the benchmark skips scenes without predictions
        gt_ids = read_ints(gt_file)
        predictions = read_predictions(pred_dir, scene)
        per_class[scene] = scene_matches(gt_ids, predictions, {c: str(c) for c in thing_ids}, min_region)
        # class-agnostic: every thing class becomes "object"; GT ids stay distinct per instance
        object_gt = np.zeros_like(gt_ids)
        things = np.isin(gt_ids // DIVISOR, thing_ids)
        _, renumbered = np.unique(gt_ids[things], return_inverse=True)
        object_gt[things] = DIVISOR + 1 + renumbered.reshape(-1)
        object_preds = distinct_objects([{**p, "label": 1 if p["label"] in thing_ids else 0} for p in predictions])
        agnostic[scene] = scene_matches(object_gt, object_preds, {1: "object"}, min_region)
    names = [str(c) for c in thing_ids]
    per_class_table = instance_ap(per_class, names, min_region)
    out = {f"instance/{k}": v for k, v in summarise(per_class_table).items()}
    out |= {f"instance/{k}_class_agnostic": v for k, v in summarise(instance_ap(agnostic, ["object"], min_region)).items()}
    miou, ious = semantic_iou(root / "semantic" / "gt", root / "semantic" / "pred", class_ids)
    out["semantic/miou"] = miou
    out["per_class_ap"] = {
        c: [float(np.nanmean(r[:-1])) if not np.isnan(r[:-1]).all() else math.nan, float(r[0]), float(r[-1])]
        for c, r in zip(thing_ids, per_class_table)
    }
    out["per_class_iou"] = {c: float(v) for c, v in zip(class_ids, ious)}
    out["num_scans"] = len(per_class)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--benchmark", default="scannet200", choices=("scannet200", "scannet"))
    parser.add_argument("--min-region", type=int, default=MIN_REGION)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bifusion_core.data.labels import LABEL_SETS  # class lists only

    labels = LABEL_SETS[args.benchmark]
    result = evaluate_export(args.export_dir, list(labels.raw_ids), list(labels.thing_raw_ids), args.min_region)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("per_class")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
