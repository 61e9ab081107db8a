"""Projection against a synthetic camera: back-projected depth pixels must land on themselves."""

from __future__ import annotations

import math

import pytest
import torch

from bifusion_core.geometry.projection import project_points, sample_feature_maps

W, H = 64, 48
K = torch.tensor([[50.0, 0.0, 31.5], [0.0, 52.0, 23.5], [0.0, 0.0, 1.0]])


def _pose() -> torch.Tensor:
    """A camera-to-world pose with rotation and a large-ish translation (like ScanNet rooms)."""
    a, b = math.radians(25.0), math.radians(-40.0)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = torch.tensor([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = rz @ rx
    pose[:3, 3] = torch.tensor([3.2, -1.7, 1.4])
    return pose.float()


def _depth_map() -> torch.Tensor:
    """A slanted plane with a zero-depth hole, so every pixel has a different depth."""
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    depth = 1.5 + 0.02 * cols + 0.01 * rows
    depth[:5, :5] = 0.0
    return depth.float()


def _backproject(cols: torch.Tensor, rows: torch.Tensor, depth: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    z = depth[rows, cols].double()
    x = (cols.double() - K[0, 2]) * z / K[0, 0]
    y = (rows.double() - K[1, 2]) * z / K[1, 1]
    cam = torch.stack([x, y, z, torch.ones_like(z)], dim=1)
    return (cam @ pose.double().T)[:, :3].float()


def test_backprojected_pixels_project_onto_themselves() -> None:
    depth, pose = _depth_map(), _pose()
    rows, cols = torch.meshgrid(torch.arange(5, H), torch.arange(5, W), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    points = _backproject(cols, rows, depth, pose)

    uv, valid = project_points(points, pose, K, (W, H), depth)

    assert valid.all()
    assert torch.allclose(uv[:, 0], cols.float(), atol=1e-3)
    assert torch.allclose(uv[:, 1], rows.float(), atol=1e-3)


def test_occluded_behind_and_outside_points_are_invalid() -> None:
    depth, pose = _depth_map(), _pose()
    cols, rows = torch.tensor([10, 20, 30, 40]), torch.tensor([10, 15, 30, 40])
    surface = _backproject(cols, rows, depth, pose)
    camera_centre = pose[:3, 3]
    ray = surface - camera_centre

    occluded = camera_centre + ray * 1.5  # same pixel, 50 % farther than the visible surface
    slightly_far = camera_centre + ray * 1.2  # within the 25 % relative depth tolerance
    behind_camera = camera_centre - ray  # z < 0
    # Outside the image: a pixel column of -2 and a row of H + 3, back-projected at depth 2 m.
    out_cols, out_rows = torch.tensor([-2.0, 10.0]), torch.tensor([10.0, H + 3.0])
    z = torch.full((2,), 2.0, dtype=torch.float64)
    cam = torch.stack([(out_cols - K[0, 2]) * z / K[0, 0], (out_rows - K[1, 2]) * z / K[1, 1], z, torch.ones_like(z)], dim=1)
    outside = (cam @ pose.double().T)[:, :3].float()
    hole = _backproject(torch.tensor([2]), torch.tensor([2]), torch.full((H, W), 2.0), pose)  # depth 0 there

    _, v_surface = project_points(surface, pose, K, (W, H), depth)
    _, v_occluded = project_points(occluded, pose, K, (W, H), depth)
    _, v_far = project_points(slightly_far, pose, K, (W, H), depth)
    _, v_behind = project_points(behind_camera, pose, K, (W, H), depth)
    uv_out, v_out = project_points(outside, pose, K, (W, H), None)
    _, v_hole = project_points(hole, pose, K, (W, H), depth)
    _, v_hole_no_depth = project_points(hole, pose, K, (W, H), None)

    assert v_surface.all() and v_far.all()
    assert not v_occluded.any()
    assert not v_behind.any()
    assert not v_out.any() and torch.isfinite(uv_out).all()
    assert not v_hole.any() and v_hole_no_depth.all()


def test_border_and_pixel_extent() -> None:
    pose = torch.eye(4)
    # Points at z = 1 hitting u = -0.49 (inside pixel 0), u = -0.51 (outside), u = W - 0.51 (inside).
    us = torch.tensor([-0.49, -0.51, W - 0.51, 3.0])
    points = torch.stack([(us - K[0, 2]) / K[0, 0], torch.zeros(4), torch.ones(4)], dim=1)
    _, valid = project_points(points, pose, K, (W, H), None)
    assert valid.tolist() == [True, False, True, True]
    _, valid_border = project_points(points, pose, K, (W, H), None, border=4)
    assert valid_border.tolist() == [False, False, False, False]


def sample_one(fmap: torch.Tensor, uv: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """One (C, h, w) map read at every pixel of ``uv``."""
    return sample_feature_maps(fmap[None], uv, torch.zeros(len(uv), dtype=torch.long), image_size)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sampling_at_cell_centres_returns_the_cells(dtype: torch.dtype) -> None:
    h, w = 3, 4
    image_size = (16 * w, 16 * h)  # a 64 x 48 image covered by a 4 x 3 grid of 16-pixel cells
    channels = 5
    fmap = torch.arange(channels * h * w, dtype=torch.float32).reshape(channels, h, w).to(dtype)

    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # Centre of cell (i, j) in pixel-index coordinates: 16 * j + 7.5.
    uv = torch.stack([16 * cols.reshape(-1) + 7.5, 16 * rows.reshape(-1) + 7.5], dim=1).float()
    sampled = sample_one(fmap, uv, image_size)

    expected = fmap.float().reshape(channels, -1).T
    assert sampled.shape == (h * w, channels)
    assert torch.allclose(sampled, expected, atol=1e-4)

    # Half way between the centres of cells (0, 0) and (0, 1): their mean.
    mid = sample_one(fmap, torch.tensor([[15.5, 7.5]]), image_size)
    assert torch.allclose(mid[0], (fmap[:, 0, 0].float() + fmap[:, 0, 1].float()) / 2, atol=1e-4)
    # The image corner pixel (0, 0) lies in the outer half-cell ring: clamped to cell (0, 0).
    corner = sample_one(fmap, torch.tensor([[0.0, 0.0]]), image_size)
    assert torch.allclose(corner[0], fmap[:, 0, 0].float(), atol=1e-4)
