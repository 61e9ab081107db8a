"""``bifusion infer RUN --frames``: a raw recording (no mesh, no labels, no prepare) in ScanNet's
exported layout, as a ``.sens`` and in the plain layout, streamed through the online segmenter."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.prepare.frame_sample import FrameSampling, observe_frame
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.raw.plain_frames import PlainFrames
from bifusion_core.data.raw.recording import open_recording
from bifusion_core.data.raw.scannet_files import read_matrix, read_mesh
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP, SyntheticOptions
from bifusion_core.data.synthetic.write import write_synthetic_scannet
from bifusion_core.engine import builders
from bifusion_core.engine.checkpoint import save_checkpoint
from bifusion_core.evaluation.export import read_ids, read_instance_predictions
from bifusion_core.geometry.camera import rescale_intrinsic
from bifusion_core.models.bifusion import build_model
from bifusion_core.online.recording_stream import RecordingStream
from bifusion_core.online.stream import ScanStream
from cli import run_cli

SCENE = "scene0000_00"
RUN_IMAGE_SIZE = (128, 96)
RUN_POINTS = 1024
MODEL_SEED = 10  # an untrained model whose frames hold several instances (most seeds give one whole-frame mask)
FRAMES = 4  # rendered frames at raw indices 0, 20, 40, 60; then one lost-tracking frame (80, pose -inf)
LOST = {"invalid pose (not finite)": 1}
LABEL_FIELDS = ("semantic", "instance", "instance_class", "label_raw")


@dataclass
class Recordings:
    prepared: Path  # the scan prepared as MV frames, from its mesh and labels
    exported: Path  # the scan folder without mesh, segments, aggregation, metadata or label table
    sens: Path
    plain: Path
    mesh: Path  # the scan's mesh, kept aside: what a user passes to --mesh


def to_plain_layout(scan: Path, dest: Path) -> Path:
    """ScanNet's export → the plain layout (docs/OWN_DATA.md): zero-padded indices, colour intrinsics
    in intrinsics.txt and the depth camera's own in depth_intrinsics.txt (registered, not pixel-aligned)."""
    for folder, suffix in (("depth", ".png"), ("color", ".jpg"), ("pose", ".txt")):
        (dest / folder).mkdir(parents=True)
        for path in (scan / folder).glob(f"*{suffix}"):
            shutil.copy(path, dest / folder / f"{int(path.stem):06d}{suffix}")
    for name, camera in (("intrinsics.txt", "color"), ("depth_intrinsics.txt", "depth")):
        k = read_matrix(scan / "intrinsic" / f"intrinsic_{camera}.txt")[:3, :3]
        np.savetxt(dest / name, k, fmt="%f")
    return dest


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Recordings:
    root = tmp_path_factory.mktemp("infer-raw")
    write_synthetic_scannet(root / "raw", 1, seed=2, options=SyntheticOptions(num_frames=FRAMES), layout="both")
    prepare_scannet(
        root / "raw",
        root / "prepared",
        mode="mv",
        mv_frame_step=SYNTHETIC_FRAME_STEP,
        image_size=RUN_IMAGE_SIZE,
        num_points=RUN_POINTS,
    )
    scan = root / "raw" / "scans" / SCENE
    shutil.move(scan / f"{SCENE}_vh_clean_2.ply", root / "mesh.ply")
    for name in (f"{SCENE}_vh_clean_2.0.010000.segs.json", f"{SCENE}.aggregation.json", f"{SCENE}.txt"):
        (scan / name).unlink()
    (root / "raw" / "scannetv2-labels.combined.tsv").unlink()
    plain = to_plain_layout(scan, root / "plain" / SCENE)
    return Recordings(root / "prepared", scan, scan / f"{SCENE}.sens", plain, root / "mesh.ply")


@pytest.fixture(scope="module")
def run(recordings, tmp_path_factory) -> Path:
    """An untrained demo-mv run at a tiny image size and point count (its run config sets both)."""
    cfg = load_preset("demo-mv", [])
    cfg.data.root = recordings.prepared
    cfg.data.image_size, cfg.data.num_points = RUN_IMAGE_SIZE, RUN_POINTS
    cfg.train.device = "cpu"
    cfg.clip.use_precomputed = False
    cfg.clip.weights = builders.clip_weights_path(cfg)  # the session's random ViT-B/16
    torch.manual_seed(MODEL_SEED)
    model = build_model(cfg, LABEL_SETS[cfg.data.benchmark])
    folder = tmp_path_factory.mktemp("outputs") / "demo-mv" / "untrained"
    save_checkpoint(
        folder / "checkpoints" / "last.pt", {"model": model.state_dict(), "config": cfg.model_dump(mode="json"), "iteration": 0}
    )
    return folder


def layouts(recordings: Recordings) -> dict[str, Path]:
    return {"exported": recordings.exported, "sens": recordings.sens, "plain": recordings.plain}


def test_every_layout_streams_exactly_the_prepared_mv_model_input(recordings):
    """Points, colours, pixels, superpoints, cameras, depth, voxels and CLIP tokens of every raw frame
    equal those of the prepared MV frame; the labels are empty (a raw recording has no mesh)."""
    cfg = load_preset("demo-mv", [])
    cfg.data.image_size, cfg.data.num_points, cfg.clip.use_precomputed = RUN_IMAGE_SIZE, RUN_POINTS, False
    labels = LABEL_SETS[cfg.data.benchmark]
    clip = builders.clip_source(cfg, recordings.prepared)
    prepared = ScanStream.open(recordings.prepared, SCENE, labels, cfg.data.voxel_size, clip)
    sampling = FrameSampling(RUN_IMAGE_SIZE, RUN_POINTS, (0.1, 6.0), 0)
    for layout, path in layouts(recordings).items():
        recording = open_recording(path, frame_step=SYNTHETIC_FRAME_STEP)
        assert recording.layout == layout and recording.name == SCENE
        stream = RecordingStream(recording, labels, cfg.data.voxel_size, sampling, clip)
        raw = list(stream.records)
        assert len(stream) == len(prepared) == FRAMES and dict(stream.skipped) == LOST
        for record, reference in zip(raw, prepared.records):
            mine, theirs = stream.batch(record), prepared.batch(reference)
            assert mine.keys == theirs.keys
            for name in mine.__dataclass_fields__:
                value = getattr(mine, name)
                if name in LABEL_FIELDS:
                    assert (value <= 0).all(), (layout, name)
                elif isinstance(value, torch.Tensor):
                    assert torch.equal(value, getattr(theirs, name)), (layout, record.frame, name)
                else:
                    assert value == getattr(theirs, name), (layout, record.frame, name)
        recording.close()


def test_depth_scale_and_pixel_aligned_depth(recordings, tmp_path):
    """--depth-scale: the same depth in 0.2 mm units gives the same sample; without
    depth_intrinsics.txt the depth camera is the colour camera scaled to the depth image."""
    sampling = FrameSampling(RUN_IMAGE_SIZE, RUN_POINTS, (0.1, 6.0), 0)
    scaled = tmp_path / SCENE
    shutil.copytree(recordings.plain, scaled)
    for path in (scaled / "depth").glob("*.png"):
        depth = np.asarray(Image.open(path)).astype(np.uint16)
        Image.fromarray((depth * 5).astype(np.uint16)).save(path)
    reference, fine = PlainFrames(recordings.plain), PlainFrames(scaled, depth_scale=5000)
    for source in (reference, fine):
        source.check_files(source.frames())
    a, b = observe_frame(reference, 20, SCENE, sampling), observe_frame(fine, 20, SCENE, sampling)
    assert np.array_equal(a.arrays["depth_mm"], b.arrays["depth_mm"])
    np.testing.assert_allclose(a.arrays["points"], b.arrays["points"], atol=1e-5)

    (scaled / "depth_intrinsics.txt").unlink()
    aligned = PlainFrames(scaled, depth_scale=5000)
    aligned.check_files(aligned.frames())
    color_k = np.loadtxt(scaled / "intrinsics.txt")
    expected = rescale_intrinsic(color_k, aligned.color_size, aligned.depth_size).astype(np.float32)
    assert aligned.depth_size == (160, 120) and aligned.color_size == (324, 242)
    assert np.array_equal(aligned.intrinsics.depth, expected.astype(np.float64))
    assert not isinstance(observe_frame(aligned, 20, SCENE, sampling), str)


def read_outputs(out: Path) -> tuple[dict, np.ndarray]:
    from plyfile import PlyData

    vertex = PlyData.read(str(out / f"{SCENE}.ply"))["vertex"].data
    return json.loads((out / "instances.json").read_text()), vertex


@pytest.mark.slow
def test_infer_frames_gives_the_same_instances_in_every_layout(recordings, run, tmp_path):
    outs = {}
    for layout, path in layouts(recordings).items():
        outs[layout] = tmp_path / layout
        extra = ("--mesh", recordings.mesh) if layout == "exported" else ()
        stdout = run_cli(
            "infer", run, "--frames", path, "--frame-step", SYNTHETIC_FRAME_STEP, "--out", outs[layout], *extra
        ).stdout
        assert "instances" in stdout and "ms/frame" in stdout and "skipped frames 1 × invalid pose" in stdout
    run_cli("infer", run, "--scene", SCENE, "--data", recordings.prepared, "--out", tmp_path / "prepared")

    summary, vertex = read_outputs(outs["exported"])
    for layout in ("sens", "plain"):
        other, other_vertex = read_outputs(outs[layout])
        assert other["layout"] == layout and other["name"] == SCENE
        assert [(i["class"], i["points"], i["views"]) for i in other["instances"]] == [
            (i["class"], i["points"], i["views"]) for i in summary["instances"]
        ]
        for mine, theirs in zip(other["instances"], summary["instances"]):
            assert mine["score"] == pytest.approx(theirs["score"], rel=1e-5)
        for name in ("x", "y", "z", "instance", "class_id", "semantic_id"):
            assert np.array_equal(other_vertex[name], vertex[name]), (layout, name)
    # the same online path as the prepared scan's: same fused points, semantics and instance coverage
    with np.load(tmp_path / "prepared" / f"{SCENE}.npz") as prepared:
        assert np.array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), prepared["points"])
        assert np.array_equal(vertex["semantic_id"], prepared["point_semantic"])
        assert np.array_equal(vertex["instance"] >= 0, prepared["point_instance"] >= 0)

    # instances.json and the fused PLY describe the same instances
    labels = LABEL_SETS["scannet200"]
    assert summary["frames"] == {"chosen": FRAMES + 1, "frame_step": SYNTHETIC_FRAME_STEP, "streamed": FRAMES, "skipped": LOST}
    instances = summary["instances"]
    assert len(instances) >= 1 and set(np.unique(vertex["instance"])) <= set(range(-1, len(instances)))
    colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1)
    for entry in instances:
        assert entry["class"] in labels.thing_names and entry["class_id"] in labels.thing_raw_ids
        assert 0 < entry["score"] <= 1 and entry["views"] >= 1
        mine = vertex["instance"] == entry["id"]
        xyz = np.stack([vertex["x"][mine], vertex["y"][mine], vertex["z"][mine]], 1)
        assert 0 < mine.sum() <= entry["points"]  # a point in two masks is shown in the better one
        assert (xyz >= np.array(entry["box"]["min"]) - 1e-4).all() and (xyz <= np.array(entry["box"]["max"]) + 1e-4).all()
        assert (vertex["class_id"][mine] == entry["class_id"]).all()
        assert len(np.unique(colors[mine], axis=0)) == 1
    assert (vertex["class_id"][vertex["instance"] < 0] == 0).all()
    assert set(np.unique(vertex["semantic_id"])) <= set(labels.raw_ids)

    # benchmark files over the fused points: one line per (instance, class) proposal
    num_points = len(vertex)
    masks, label_ids, scores = read_instance_predictions(
        outs["exported"] / "points" / "instance" / "pred", SCENE, num_points=num_points
    )
    assert np.array_equal(read_ids(outs["exported"] / "points" / "semantic" / "pred" / f"{SCENE}.txt"), vertex["semantic_id"])
    for entry in instances:
        best = entry["proposals"][0]
        assert label_ids[best["line"]] == entry["class_id"] and scores[best["line"]] == pytest.approx(entry["score"])
        assert masks[best["line"]].sum() == entry["points"]
    assert sum(len(entry["proposals"]) for entry in instances) == len(masks)
    assert Image.open(outs["exported"] / f"{SCENE}_top.png").format == "PNG"

    # --mesh: the result on the mesh's vertices, faces kept
    mesh, mapped = read_mesh(recordings.mesh), read_mesh(outs["exported"] / "mesh" / f"{SCENE}.ply")
    assert np.array_equal(mapped.faces, mesh.faces) and np.array_equal(mapped.vertices, mesh.vertices)
    with np.load(outs["exported"] / "mesh" / f"{SCENE}.npz") as on_mesh:
        assert on_mesh["instance_masks"].shape == (len(masks), len(mesh.vertices))
    mesh_masks, _, _ = read_instance_predictions(
        outs["exported"] / "mesh" / "instance" / "pred", SCENE, num_points=len(mesh.vertices)
    )
    assert len(mesh_masks) == len(masks)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def missing_pose(root: Path) -> None:
    (root / "pose" / "000040.txt").unlink()


def small_depth(root: Path) -> None:
    write_png(root / "depth" / "000040.png", np.full((60, 80), 1500, np.uint16))


def unreadable_colour(root: Path) -> None:
    (root / "color" / "000040.jpg").write_bytes(b"not an image")


def eight_bit_depth(root: Path) -> None:
    write_png(root / "depth" / "000040.png", np.full((120, 160), 150, np.uint8))


def transposed_pose(root: Path) -> None:
    path = root / "pose" / "000040.txt"
    np.savetxt(path, read_matrix(path).T)


def no_intrinsics(root: Path) -> None:
    (root / "intrinsics.txt").unlink()


def truncated_colour(root: Path) -> None:
    """The header opens (checked up front), the image data is cut: found while streaming."""
    path = root / "color" / "000040.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def lost_everywhere(root: Path) -> None:
    for path in (root / "pose").glob("*.txt"):
        path.write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")


BAD_RECORDINGS = [  # (breaker, the line's parts, refused before the model runs)
    (missing_pose, ["pose/000040.txt", "pose file not found (depth/000040.png exists)"], True),
    (small_depth, ["depth/000040.png", "depth image is 80x60 but the recording's depth images are 160x120"], True),
    (unreadable_colour, ["color/000040.jpg", "unreadable colour image (UnidentifiedImageError)"], True),
    (eight_bit_depth, ["depth/000040.png", "16-bit single-channel"], True),
    (transposed_pose, ["pose/000040.txt", "transposed"], True),
    (no_intrinsics, [SCENE, "no recording here", "intrinsics.txt"], True),
    (truncated_colour, ["color/000040.jpg", "unreadable"], False),
    (lost_everywhere, [SCENE, "no usable frame among the 5 chosen: 5 × invalid pose (not finite)"], False),
]


def assert_one_line(proc, expected: list[str], out: Path) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize("breaker, expected, upfront", BAD_RECORDINGS, ids=[b.__name__ for b, _, _ in BAD_RECORDINGS])
def test_bad_recording_one_line_nothing_written(recordings, run, tmp_path, breaker, expected, upfront):
    broken = tmp_path / "in" / SCENE
    shutil.copytree(recordings.plain, broken)
    breaker(broken)
    out = tmp_path / "out" / "result"
    out.parent.mkdir()
    proc = run_cli("infer", run, "--frames", broken, "--frame-step", SYNTHETIC_FRAME_STEP, "--out", out, check=False)
    assert_one_line(proc, expected, out)
    assert ("frames " in proc.stdout) != upfront, proc.stdout  # the progress bar starts once the recording is checked


@pytest.mark.slow
def test_bad_options_one_line(recordings, run, tmp_path):
    out = tmp_path / "out" / "result"
    out.parent.mkdir()
    cases = [
        (("--frames", recordings.exported, "--depth-scale", 1000), ["--depth-scale", "plain layout only"]),
        (("--frames", recordings.plain, "--scene", SCENE), ["exactly one of --scene", "--frames"]),
        (("--scene", SCENE, "--max-frames", 3), ["--max-frames", "only applies to --frames"]),
        (("--frames", recordings.plain, "--frame-step", 0), ["--frame-step", "greater than 0"]),
        (("--frames", recordings.plain, "--max-frames", 0), ["--max-frames", "greater than 0"]),
    ]
    for args, expected in cases:
        assert_one_line(run_cli("infer", run, *args, "--out", out, check=False), expected, out)
