"""What ``bifusion infer --frames`` writes for a segmented recording (docs/OWN_DATA.md has the fields):

```
OUT/<name>.ply                     fused points: x y z, red green blue by instance, instance, class_id, semantic_id
OUT/<name>_top.png                 the points from above, coloured by instance
OUT/instances.json                 the run, then each instance: class, score, views, points, box
OUT/points/instance/pred/          benchmark instance masks over <name>.ply's points (evaluation/export.py)
OUT/points/semantic/pred/          benchmark semantic labels of those points
OUT/mesh/...                       with --mesh: the same on the mesh's vertices, and <name>.npz as `infer --scene` writes
```

The segmenter proposes each scene instance under its few likeliest classes (``classes_per_instance``);
the benchmark files keep every (instance, class) proposal, as ``eval --export`` does, while the
PLYs and ``instances.json`` list each instance once, under its best-scored class, best first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import write_json
from ..data.labels import LabelSet
from ..data.raw.scannet_files import Mesh
from ..evaluation.export import write_instance_predictions, write_semantic
from ..evaluation.scene_eval import ScenePrediction
from ..evaluation.visualize import palette, write_top_view
from ..ply import write_ply
from .infer import write_vertex_result
from .predictions import vertex_instance
from .segmenter import SceneResult

INSTANCES_FILE = "instances.json"
NO_INSTANCE = -1


@dataclass(frozen=True)
class SceneInstances:
    """A result's proposals grouped into instances (proposals with one mask), best instance first."""

    of_proposal: np.ndarray  # (K,) instance index of each proposal
    best: np.ndarray  # (I,) each instance's best proposal

    @classmethod
    def group(cls, masks: np.ndarray, scores: np.ndarray) -> "SceneInstances":
        order = np.argsort(-np.asarray(scores), kind="stable")
        index: dict[bytes, int] = {}
        of_proposal = np.zeros(len(masks), np.int64)
        best = []
        for k in order:
            key = np.packbits(masks[k]).tobytes()
            if key not in index:
                index[key] = len(best)
                best.append(k)
            of_proposal[k] = index[key]
        return cls(of_proposal, np.asarray(best, np.int64))

    def per_element(self, masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(E,) int32 instance of each point or vertex (its best-scored covering proposal's), -1 none."""
        proposal = vertex_instance(masks, scores)
        instance = np.full(len(proposal), NO_INSTANCE, np.int32)
        covered = proposal >= 0
        instance[covered] = self.of_proposal[proposal[covered]]
        return instance


def instance_records(result: SceneResult, labels: LabelSet, instances: SceneInstances, views: np.ndarray) -> list[dict[str, Any]]:
    """One entry per instance: best class, score, views, points and axis-aligned box (world metres)."""
    records = []
    for i, k in enumerate(instances.best.tolist()):
        mask = result.masks[k]
        points = result.points[mask]
        proposals = np.flatnonzero(instances.of_proposal == i)
        records.append(
            {
                "id": i,
                "class": labels.thing_names[int(result.classes[k])],
                "class_id": int(labels.instance_raw_id(int(result.classes[k]))),
                "score": float(result.scores[k]),
                "views": int(views[k]),
                "points": int(mask.sum()),
                "box": {
                    "min": points.min(0).astype(float).round(4).tolist(),
                    "max": points.max(0).astype(float).round(4).tolist(),
                },
                "proposals": [  # lines of points/instance/pred/<name>.txt (0-based), best first
                    {"line": int(p), "class": labels.thing_names[int(result.classes[p])], "score": float(result.scores[p])}
                    for p in proposals[np.argsort(-result.scores[proposals], kind="stable")]
                ],
            }
        )
    return records


def element_fields(
    masks: np.ndarray, scores: np.ndarray, semantic_raw: np.ndarray, class_ids: np.ndarray, instances: SceneInstances
) -> dict[str, np.ndarray]:
    """Per point (or vertex): ``instance`` (-1 none), ``class_id`` (its instance's raw class id, 0 none), ``semantic_id``."""
    instance = instances.per_element(masks, scores)
    class_id = np.zeros(len(instance), np.int32)
    class_id[instance >= 0] = class_ids[instance[instance >= 0]]
    return {"instance": instance, "class_id": class_id, "semantic_id": np.asarray(semantic_raw, np.int32)}


def instance_colors(instance: np.ndarray, count: int) -> np.ndarray:
    """Grey for no instance, one colour per instance."""
    return palette(count + 1)[instance + 1]


def write_recording(
    folder: Path,
    name: str,
    result: SceneResult,
    labels: LabelSet,
    instances: SceneInstances,
    views: np.ndarray,
    header: dict[str, Any],
    mesh: Mesh | None = None,
    mesh_pred: ScenePrediction | None = None,
) -> list[Path]:
    """Every output of one segmented recording into ``folder``; returns the files at its top level and the folders.
    ``views``: (K,) frame views of each proposal's instance; ``mesh_pred``: the result on ``mesh``'s vertices."""
    records = instance_records(result, labels, instances, views)
    class_ids = np.asarray([r["class_id"] for r in records], np.int32)
    raw_classes = np.asarray(labels.instance_raw_id(result.classes), np.int64) if len(result.classes) else np.zeros(0, np.int64)
    semantic = np.asarray(labels.semantic_raw_id(result.semantic), np.int64)
    fields = element_fields(result.masks, result.scores, semantic, class_ids, instances)
    colors = instance_colors(fields["instance"], len(records))

    written = [folder / f"{name}.ply", folder / f"{name}_top.png", folder / INSTANCES_FILE, folder / "points"]
    write_ply(written[0], result.points, colors, fields=fields)
    write_top_view(written[1], result.points, [("instances", colors)], f"{name}: {len(records)} instances")
    write_json(written[2], {**header, "instances": records})
    write_instance_predictions(folder / "points" / "instance" / "pred", name, result.masks, raw_classes, result.scores)
    write_semantic(folder / "points" / "semantic" / "pred", name, semantic)
    if mesh is not None and mesh_pred is not None:
        written.append(folder / "mesh")
        vertex_fields = element_fields(mesh_pred.masks, mesh_pred.scores, mesh_pred.semantic, class_ids, instances)
        write_ply(
            folder / "mesh" / f"{name}.ply",
            mesh.vertices,
            instance_colors(vertex_fields["instance"], len(records)),
            mesh.faces,
            fields=vertex_fields,
        )
        write_vertex_result(folder / "mesh" / f"{name}.npz", mesh_pred, result, labels)
        write_instance_predictions(
            folder / "mesh" / "instance" / "pred", name, mesh_pred.masks, mesh_pred.labels, mesh_pred.scores
        )
        write_semantic(folder / "mesh" / "semantic" / "pred", name, mesh_pred.semantic)
    return written
