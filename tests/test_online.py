"""Online merging, bounded memory and mesh mapping on hand-made frames, boxes and meshes."""

import numpy as np
import pytest

from bifusion_core.online.merge import FrameInstances, InstanceMemory, assign, box_iou
from bifusion_core.online.mesh_map import nearest_point, segment_majority, smooth_masks, to_vertices
from bifusion_core.online.point_map import PointMap, weighted_vote
from bifusion_core.online.segmenter import merge_frame


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def box_of(points):
    lo, hi = points.min(0), points.max(0)
    return np.concatenate([(lo + hi) / 2, hi - lo]).astype(np.float32)


def cube(centre, edge, n, rng):
    return (np.asarray(centre) + rng.uniform(-edge / 2, edge / 2, (n, 3))).astype(np.float32)


def frame_of(objects, rng, embeds, scores=None, labels=None):
    """A frame whose points are the objects' points; one instance per object with its box."""
    points = np.concatenate(objects)
    sizes = np.cumsum([0] + [len(o) for o in objects])
    masks = np.zeros((len(objects), len(points)), bool)
    for k in range(len(objects)):
        masks[k, sizes[k] : sizes[k + 1]] = True
    inst = FrameInstances(
        masks=masks,
        labels=np.asarray(labels if labels is not None else [0] * len(objects), np.int64),
        scores=np.asarray(scores if scores is not None else [0.8] * len(objects), np.float32),
        embed=np.stack([unit(e) for e in embeds]),
        boxes=np.stack([box_of(o) for o in objects]),
    )
    return points, inst


def stream(memory, point_map, frames):
    for points, inst in frames:
        merge_frame(point_map, memory, inst, points, np.zeros(len(points), np.int64), np.ones(len(points), np.float32))


def test_box_iou_values():
    a = np.array([[0, 0, 0, 2, 2, 2]], np.float32)
    b = np.array([[1, 0, 0, 2, 2, 2], [5, 5, 5, 1, 1, 1], [0, 0, 0, 2, 2, 2]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[4 / 12, 0.0, 1.0]], rtol=1e-6)


def test_assign_respects_threshold():
    sim = np.array([[0.9, 0.1], [0.2, 0.25]])
    rows, cols = assign(sim, 0.3)
    assert rows.tolist() == [0] and cols.tolist() == [0]


def test_object_seen_in_two_frames_becomes_one_instance():
    rng = np.random.default_rng(0)
    chair = cube([1, 1, 0.5], 0.5, 400, rng)
    # second view: the same chair, partly overlapping points, a slightly different embedding
    chair_again = cube([1.05, 1.0, 0.5], 0.5, 400, rng)
    memory, point_map = InstanceMemory(50, threshold=0.3), PointMap(0.02)
    stream(memory, point_map, [frame_of([chair], rng, [[1, 0, 0]], [0.9]), frame_of([chair_again], rng, [[1, 0.1, 0]], [0.5])])
    assert memory.num == 1
    assert memory.counts[0] == 2
    assert memory.scores[0] == pytest.approx(1 - 0.1 * 0.5)  # noisy-OR of the views' scores
    np.testing.assert_allclose(memory.boxes[0], (box_of(chair) + box_of(chair_again)) / 2, rtol=1e-5)
    assert np.linalg.norm(memory.embed[0]) == pytest.approx(1.0, abs=1e-6)
    # the merged mask covers the points of both views
    mask = memory.masks(point_map.size)[0]
    assert mask.sum() > 0.9 * point_map.size


def test_two_objects_stay_two():
    rng = np.random.default_rng(1)
    chair, table = cube([0, 0, 0.5], 0.5, 300, rng), cube([3, 0, 0.5], 0.8, 300, rng)
    memory, point_map = InstanceMemory(50, threshold=0.3), PointMap(0.02)
    # same embedding for both: only the boxes (IoU 0) keep them apart
    stream(
        memory,
        point_map,
        [
            frame_of([chair, table], rng, [[1, 0, 0], [1, 0, 0]]),
            frame_of([cube([0, 0, 0.5], 0.5, 300, rng), cube([3, 0, 0.5], 0.8, 300, rng)], rng, [[1, 0, 0], [1, 0, 0]]),
        ],
    )
    assert memory.num == 2 and memory.counts[:2].tolist() == [2, 2]
    masks = memory.masks(point_map.size)
    assert not (masks[0] & masks[1]).any()
    # overlapping boxes but orthogonal embeddings and no shared surface (two halves of one box,
    # e.g. a stack of two objects) do not merge either
    lower, upper = cube([0, 0, 0.25], 0.5, 300, rng), cube([0, 0, 0.75], 0.5, 300, rng)
    shared_box = box_of(np.concatenate([lower, upper]))
    memory2, map2 = InstanceMemory(50, threshold=0.3), PointMap(0.02)
    first, second = frame_of([lower], rng, [[1, 0, 0]]), frame_of([upper], rng, [[0, 1, 0]])
    first[1].boxes[:] = second[1].boxes[:] = shared_box
    stream(memory2, map2, [first, second])
    assert memory2.num == 2


def test_shared_surface_merges_whatever_the_learned_cues_say():
    """Observed overlap is direct evidence: the same points in the same mask are one object even
    when an undertrained merge head gives orthogonal embeddings and boxes that miss."""
    rng = np.random.default_rng(6)
    chair = cube([0, 0, 0.5], 0.5, 400, rng)
    first, second = (
        frame_of([chair], rng, [[1, 0, 0]]),
        frame_of([chair + rng.normal(0, 0.005, chair.shape).astype(np.float32)], rng, [[0, 1, 0]]),
    )
    second[1].boxes[:, :3] += 5.0  # a box head that is off by metres
    memory, point_map = InstanceMemory(50, threshold=0.3), PointMap(0.02)
    stream(memory, point_map, [first, second])
    assert memory.num == 1 and memory.counts[0] == 2


def test_partial_view_merges_with_the_whole_object():
    """The second view shows only a third of the sofa: compared over the cells it observes, the
    memory's sofa and the view agree, though their full extents (and boxes) differ."""
    rng = np.random.default_rng(7)
    sofa = cube([0, 0, 0.4], 1.8, 3000, rng)
    part = sofa[sofa[:, 0] < -0.3]
    first, second = frame_of([sofa], rng, [[1, 0, 0]]), frame_of([part], rng, [[0, 1, 0]])
    memory, point_map = InstanceMemory(50, threshold=0.3), PointMap(0.02, cell=0.1)
    stream(memory, point_map, [first, second])
    assert memory.num == 1


def test_label_gate_keeps_classes_apart():
    rng = np.random.default_rng(2)
    chair = cube([0, 0, 0.5], 0.5, 300, rng)
    frames = [frame_of([chair], rng, [[1, 0, 0]], labels=[3]), frame_of([chair], rng, [[1, 0, 0]], labels=[4])]
    gated, open_ = InstanceMemory(10, 0.3, label_gate=True), InstanceMemory(10, 0.3, label_gate=False)
    stream(gated, PointMap(0.02), frames)
    stream(open_, PointMap(0.02), frames)
    assert gated.num == 2 and open_.num == 1


def test_votes_drop_points_a_later_view_puts_outside():
    rng = np.random.default_rng(3)
    obj = cube([0, 0, 0], 0.4, 500, rng)
    points, inst = frame_of([obj], rng, [[1, 0, 0]])
    memory, point_map = InstanceMemory(10, 0.3), PointMap(0.05)
    stream(memory, point_map, [(points, inst)])
    # two later views see the same points but only the x < 0 half belongs to the object
    for _ in range(2):
        half = inst.masks.copy()
        half[0] &= points[:, 0] < 0
        stream(memory, point_map, [(points, FrameInstances(half, inst.labels, inst.scores, inst.embed, inst.boxes))])
    mask = memory.masks(point_map.size)[0]
    kept = point_map.view()["points"][mask]
    assert memory.num == 1 and len(kept) > 0
    assert (kept[:, 0] < 0.05).all()  # voxels of the x > 0 half (voted +1 −1 −1) are out


def test_max_instances_evicts_lowest_score():
    rng = np.random.default_rng(4)
    objects = [cube([3 * i, 0, 0], 0.3, 100, rng) for i in range(3)]
    memory, point_map = InstanceMemory(2, threshold=0.3), PointMap(0.02)
    stream(memory, point_map, [frame_of(objects, rng, [[1, 0, 0]] * 3, scores=[0.9, 0.1, 0.5])])
    assert memory.num == 2
    assert sorted(memory.scores[:2].tolist()) == pytest.approx([0.5, 0.9])
    masks = memory.masks(point_map.size)
    centres = [point_map.view()["points"][m].mean(0)[0] for m in masks]
    assert sorted(np.round(centres).tolist()) == [0.0, 6.0]  # the 0.1-score object (x=3) is gone


def test_voxel_downsampling_bounds_the_point_count():
    rng = np.random.default_rng(5)
    point_map = PointMap(0.1, capacity=16)
    for _ in range(30):  # 30 frames of the same 1 m cube: 150k raw points
        pts = rng.uniform(0, 0.999, (5000, 3)).astype(np.float32)
        rows = point_map.add(pts, np.zeros(5000, np.int64), np.ones(5000, np.float32))
        assert rows.max() < point_map.size
    assert point_map.size == 1000  # 10 x 10 x 10 voxels, however many frames
    # each row keeps a point inside its own voxel
    view = point_map.view()["points"]
    assert len(np.unique(np.floor(view / 0.1), axis=0)) == 1000


def test_point_map_rows_are_stable_and_semantic_votes():
    point_map = PointMap(1.0)
    a = np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5]], np.float32)
    rows1 = point_map.add(a, np.array([2, 7]), np.array([0.9, 0.9], np.float32))
    rows2 = point_map.add(a[::-1].copy(), np.array([3, 3]), np.array([0.5, 0.95], np.float32))
    assert rows1.tolist() == [0, 1] and rows2.tolist() == [1, 0]
    # voxel 0: 2 (0.9) vs 3 (0.95) → 3 takes over; voxel 1: 7 (0.9) vs 3 (0.5) → 7 stays
    assert point_map.view()["semantic"].tolist() == [3, 7]


def test_weighted_vote_is_a_majority():
    label, weight = np.array([0]), np.array([0.0], np.float32)
    for new in [1, 2, 1, 2, 1]:
        weighted_vote(label, weight, np.array([new]), np.array([1.0], np.float32))
    assert label.tolist() == [1]


def test_mesh_mapping_nearest_vertex():
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    vertices = np.array([[0.1, 0, 0], [0.9, 0.1, 0], [0.1, 0.8, 0], [0.6, 0, 0]], np.float32)
    index, _ = nearest_point(points, vertices)
    assert index.tolist() == [0, 1, 2, 1]
    masks = np.array([[True, False, True]])
    vm, vs = to_vertices(masks, np.array([5, 6, 7]), index)
    assert vm.tolist() == [[True, False, True, False]] and vs.tolist() == [5, 6, 7, 6]


def test_segment_smoothing_on_a_hand_made_mesh():
    # 8 vertices in 3 segments: {0,1,2}, {3,4,5,6}, {7}
    segments = np.array([10, 10, 10, 4, 4, 4, 4, 99])
    semantic = np.array([1, 1, 2, 3, 5, 5, 3, 8])
    # segment 4 is a tie between 3 and 5: the smaller id wins
    assert segment_majority(semantic, segments).tolist() == [1, 1, 1, 3, 3, 3, 3, 8]
    masks = np.array(
        [
            [True, True, False, True, False, False, False, False],  # 2/3 of seg 10, 1/4 of seg 4
            [False, False, False, True, True, False, False, True],  # 2/4 of seg 4 (not a majority), seg 99
        ]
    )
    smoothed = smooth_masks(masks, segments)
    assert smoothed.tolist() == [
        [True, True, True, False, False, False, False, False],
        [False, False, False, False, False, False, False, True],
    ]
    vm, vs = to_vertices(masks, semantic, np.arange(8), segments)
    assert (vm == smoothed).all() and vs.tolist() == [1, 1, 1, 3, 3, 3, 3, 8]


def test_a_frame_without_instances_gives_empty_cues():
    """An untrained model often keeps no instance in a frame: the heads path must still give (0, D) and (0, 6)."""
    from types import SimpleNamespace

    import torch

    from bifusion_core.models.postprocess import FramePrediction
    from bifusion_core.online.cues import frame_instances

    dim = 8
    pred = FramePrediction(
        key="s/000000",
        masks=np.zeros((0, 5), bool),
        classes=np.zeros(0, np.int64),
        scores=np.zeros(0, np.float32),
        semantic=np.zeros(5, np.int64),
        boxes=np.zeros((0, 6), np.float32),
        embeddings=np.zeros((0, dim), np.float32),
    )
    out = SimpleNamespace(fused=torch.zeros(5, dim))
    for source in ("heads", "masks"):
        frame = frame_instances(out, None, pred, source)
        assert frame.embed.shape == (0, dim) and frame.boxes.shape == (0, 6) and frame.masks.shape == (0, 5)


def test_memory_masks_cover_every_accumulated_point():
    """A scan where no frame kept an instance, and points added after the last instance, still give (num, points) masks."""
    memory = InstanceMemory(max_instances=10, threshold=0.3)
    assert memory.masks(500).shape == (0, 500)
    rng = np.random.default_rng(0)
    _, frame = frame_of([cube((0, 0, 0), 0.5, 50, rng)], rng, [[1, 0, 0]])
    rows = np.arange(50)
    memory.update(frame, rows, 50, row_cells=rows)  # each point its own cell
    masks = memory.masks(5000)  # 4950 points arrived later, in frames without instances
    assert masks.shape == (1, 5000) and masks[0, :50].all() and not masks[0, 50:].any()


def test_flat_objects_merge_although_their_boxes_are_thin():
    """Two views of a poster: depth noise makes its box 5 mm thick and shifted by 1 cm; floored sides keep the IoU high."""
    poster_a = np.array([[0.0, 0.0, 1.0, 1.0, 0.005, 1.2]], np.float32)
    poster_b = np.array([[0.02, 0.01, 1.0, 0.95, 0.005, 1.15]], np.float32)
    assert box_iou(poster_a, poster_b)[0, 0] < 0.1
    assert box_iou(poster_a, poster_b, 0.1)[0, 0] > 0.7


def test_a_duplicate_part_is_folded_into_its_object_at_the_end_of_a_scan():
    rng = np.random.default_rng(5)
    sofa, lamp = cube([0, 0, 0.5], 1.0, 800, rng), cube([3, 0, 0.5], 0.4, 300, rng)
    left = sofa[sofa[:, 0] < 0]  # a frame proposes the sofa twice: whole, and its left half
    points, inst = frame_of([sofa, lamp], rng, [[1, 0, 0], [0, 1, 0]], [0.9, 0.7], labels=[3, 5])
    part = np.isin(points, left).all(1)
    inst = FrameInstances(
        masks=np.concatenate([inst.masks, part[None]]),
        labels=np.array([3, 5, 4]),
        scores=np.array([0.9, 0.7, 0.4], np.float32),
        embed=np.concatenate([inst.embed, unit([0, 0, 1])[None]]),
        boxes=np.concatenate([inst.boxes, box_of(left)[None]]),
    )
    memory, point_map = InstanceMemory(50, threshold=0.3), PointMap(0.02)
    stream(memory, point_map, [(points, inst)])
    assert memory.num == 3  # one frame: nothing to merge with yet
    kept_mask = memory.masks(point_map.size)[0].copy()
    assert memory.fold_duplicates(point_map.size, overlap=0.5) == 1
    assert memory.num == 2 and memory.counts[:2].tolist() == [2, 1]
    assert memory.scores[0] == pytest.approx(1 - 0.1 * 0.6)  # the part's view counts for the sofa
    assert memory.class_mass[0, 4] > 0 and memory.labels[0] == 3  # its class votes too, without taking over
    np.testing.assert_array_equal(memory.masks(point_map.size)[0], kept_mask)  # the part adds no point outside the sofa
    # the lamp, disjoint from both, and a threshold of 1 (never) leave everything as it is
    assert memory.fold_duplicates(point_map.size, overlap=0.5) == 0
    assert memory.fold_duplicates(point_map.size, overlap=1.0) == 0 and memory.num == 2


def test_a_part_proposed_beside_its_object_in_one_frame_is_not_merged():
    """IoU-based NMS lets a half through beside the whole (IoU 0.5); containment stops it, and only it."""
    rng = np.random.default_rng(6)
    chair, box = cube([0, 0, 0.5], 0.6, 400, rng), cube([2, 0, 0.3], 0.4, 200, rng)
    points, inst = frame_of([chair, box], rng, [[1, 0, 0], [0, 1, 0]], [0.9, 0.6])
    seat = inst.masks[0] & (points[:, 2] < 0.5)  # the chair's lower half: IoU 0.5 with the chair
    straddle = inst.masks[1] | (inst.masks[0] & (points[:, 0] > 0.25))  # the box and a strip of the chair
    frame = FrameInstances(
        masks=np.stack([inst.masks[0], inst.masks[1], seat, straddle]),
        labels=np.zeros(4, np.int64),
        scores=np.array([0.9, 0.6, 0.8, 0.5], np.float32),
        embed=np.tile(unit([1, 0, 0]), (4, 1)),
        boxes=np.stack([inst.boxes[0], inst.boxes[1], box_of(points[seat]), box_of(points[straddle])]),
    )
    # the seat lies wholly inside the better-scored chair, the straddling mask mostly inside the box
    assert frame.uncontained(0.5).tolist() == [True, True, False, False]
    assert frame.uncontained(1.0).all()  # 1: keep every proposal
    # the worse-scored of two equal masks goes, whichever comes first
    twin = FrameInstances(
        np.stack([seat, seat]),
        np.zeros(2, np.int64),
        np.array([0.3, 0.7], np.float32),
        np.tile(unit([1, 0, 0]), (2, 1)),
        np.tile(box_of(points[seat]), (2, 1)),
    )
    assert twin.uncontained(0.5).tolist() == [False, True]
