"""Point-to-pixel projection and feature sampling, the link between 3D points and 2D CLIP features.

Conventions (shared with ``DATA/sv`` samples): pixel-index coordinates, i.e. the centre of pixel
(0, 0) is (0, 0) and the image spans [-0.5, W-0.5) x [-0.5, H-0.5); ``intrinsic`` maps camera
coordinates straight to those coordinates (OpenCV convention). Batched projection takes
world-to-camera matrices, inverted once per frame in the data path (``Batch.world_to_camera``:
colour and depth are registered, one pose per frame); ``project_points`` takes a camera-to-world pose.
Everything is torch and stays on the device of the inputs, so the same code runs in DataLoader
workers on CPU and inside the model on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def project_to_frames(
    points_world: torch.Tensor,
    world_to_camera: torch.Tensor,
    intrinsic: torch.Tensor,
    image_size: tuple[int, int],
    border: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pinhole projection of N world points into F cameras at once.

    ``world_to_camera`` (F,4,4), ``intrinsic`` (F,3,3). Returns ``uv`` (F,N,2) float64 (pixel-index
    convention), camera depth ``z`` (F,N) float64 and ``inside`` (F,N) bool: in front of the camera
    and the nearest pixel inside the image shrunk by ``border`` pixels.
    """
    cam = camera_coordinates(points_world, world_to_camera)
    uv, inside = pinhole(cam, intrinsic, image_size, border)
    return uv, cam[..., 2], inside


def camera_coordinates(points_world: torch.Tensor, world_to_camera: torch.Tensor) -> torch.Tensor:
    """(F,N,3) float64 coordinates of N world points in F cameras."""
    p = torch.as_tensor(points_world).to(torch.float64)
    world_to_cam = torch.as_tensor(world_to_camera, device=p.device, dtype=torch.float64).reshape(-1, 4, 4)
    return torch.einsum("fij,nj->fni", world_to_cam[:, :3, :3], p) + world_to_cam[:, None, :3, 3]


def pinhole(
    cam: torch.Tensor, intrinsic: torch.Tensor, image_size: tuple[int, int], border: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels (F,N,2) float64 of camera coordinates (F,N,3) through intrinsics (F,3,3), and whether
    each lies in front of the camera with its nearest pixel inside the image shrunk by ``border``."""
    width, height = int(image_size[0]), int(image_size[1])
    k = torch.as_tensor(intrinsic, device=cam.device, dtype=torch.float64).reshape(-1, 3, 3)
    z = cam[..., 2]
    in_front = z > 0
    safe_z = torch.where(in_front, z, torch.ones_like(z))
    x, y = cam[..., 0] / safe_z, cam[..., 1] / safe_z
    u = k[:, 0, 0, None] * x + k[:, 0, 1, None] * y + k[:, 0, 2, None]
    v = k[:, 1, 1, None] * y + k[:, 1, 2, None]

    # Nearest pixel; floor(x + 0.5) keeps the half-open pixel extent [-0.5, 0.5) of pixel 0.
    col = torch.floor(u + 0.5)
    row = torch.floor(v + 0.5)
    inside = in_front & (col >= border) & (col <= width - 1 - border) & (row >= border) & (row <= height - 1 - border)
    return torch.stack([u, v], dim=-1), inside


def depth_consistent(
    uv: torch.Tensor, z: torch.Tensor, inside: torch.Tensor, depth_m: torch.Tensor, depth_tolerance: float
) -> torch.Tensor:
    """(F,N) bool: the nearest pixel of each inside projection has a depth d > 0 with |d - z| <= tol·d.

    Relative (OpenScene's rule), so far surfaces with noisier depth get a proportionally wider band.
    ``depth_m`` (F,H,W) metres, same cameras as ``uv``/``z``.
    """
    depth = torch.as_tensor(depth_m, device=uv.device)
    if depth.dim() == 2:
        depth = depth[None]
    frames, height, width = depth.shape
    if uv.shape[0] != frames:
        raise ValueError(f"{uv.shape[0]} projections but {frames} depth maps")
    col = torch.floor(uv[..., 0] + 0.5).long().clamp(0, width - 1)
    row = torch.floor(uv[..., 1] + 0.5).long().clamp(0, height - 1)
    f = torch.arange(frames, device=uv.device)[:, None].expand_as(col)
    d = torch.where(inside, depth[f, row, col].to(torch.float64), torch.zeros_like(z))
    return inside & (d > 0) & ((d - z).abs() <= depth_tolerance * d)


def project_points(
    points_world: torch.Tensor,
    pose_cam_to_world: torch.Tensor,
    intrinsic: torch.Tensor,
    image_size: tuple[int, int],
    depth_m: torch.Tensor | None = None,
    depth_tolerance: float = 0.25,
    border: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into one frame; ``valid`` marks points this frame actually sees.

    A point is valid when it is in front of the camera (z > 0), its nearest pixel lies inside the
    image shrunk by ``border`` pixels, and, when a depth map is given, that pixel has a depth
    ``d > 0`` with ``|d - z| <= depth_tolerance * d`` (relative, so far surfaces with noisier depth
    get a proportionally wider band). The depth test is what rejects occluded points that fall on
    a pixel showing a nearer surface.

    Returns ``uv`` (N, 2) float (u = column, v = row, pixel-index convention) and ``valid`` (N,)
    bool. ``uv`` of invalid points is finite but meaningless.
    """
    points = torch.as_tensor(points_world)
    width, height = int(image_size[0]), int(image_size[1])
    # Invert in float64: float32 inversion of poses with large translations costs millimetres.
    world_to_cam = torch.linalg.inv(torch.as_tensor(pose_cam_to_world, device=points.device, dtype=torch.float64))
    uv, z, valid = project_to_frames(points, world_to_cam, intrinsic, image_size, border)
    if depth_m is not None:
        depth = torch.as_tensor(depth_m, device=points.device)
        if tuple(depth.shape) != (height, width):
            raise ValueError(f"depth map has shape {tuple(depth.shape)}, expected (H, W) = {(height, width)}")
        valid = depth_consistent(uv, z, valid, depth, depth_tolerance)
    return uv[0].to(points.dtype if points.is_floating_point() else torch.float32), valid[0]


def multiview_visibility(
    points_world: torch.Tensor,
    world_to_camera: torch.Tensor,
    color_intrinsic: torch.Tensor,
    depth_intrinsic: torch.Tensor,
    depth_m: torch.Tensor,
    image_size: tuple[int, int],
    depth_tolerance: float = 0.25,
    border: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of F frames see each of N points, and where in their colour images.

    Colour and depth are registered (one pose per frame), so one camera transform serves both: the
    pixel comes from the colour intrinsics (the CLIP image is the colour image), occlusion from the
    depth intrinsics and the frame's own depth map: a point is seen in frame f when it lands inside
    frame f's colour image and passes the relative depth test there. Returns ``uv`` (F,N,2) float32
    colour pixels and ``seen`` (F,N) bool.
    """
    cam = camera_coordinates(points_world, world_to_camera)
    uv, inside = pinhole(cam, color_intrinsic, image_size, border)
    duv, d_inside = pinhole(cam, depth_intrinsic, image_size)
    seen = inside & depth_consistent(duv, cam[..., 2], d_inside, depth_m, depth_tolerance)
    return uv.float(), seen


def gather_multiview(
    fmaps: torch.Tensor, uv: torch.Tensor, seen: torch.Tensor, image_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the frames that see a point of the feature each frame's map holds at its pixel.

    ``fmaps`` (F,C,h,w), ``uv`` (F,N,2), ``seen`` (F,N). Returns the mean (N,C) (zeros for a point
    no frame sees) and the number of views (N,) long. The mean is one weighted bag of 4·F map cells
    per point (bilinear weights / views, 0 where a frame does not see it), so memory stays at one
    (N,C) output whatever F is (OpenScene's sum / count, without a per-frame accumulator).
    """
    num_frames, _, h, w = fmaps.shape
    views = seen.sum(0)
    cells, weights = bilinear_taps(uv, image_size, h, w)  # (F,N,4)
    cells = cells + (torch.arange(num_frames, device=cells.device) * (h * w))[:, None, None]
    weights = weights * (seen / views.clamp(min=1)).to(weights.dtype)[..., None]
    cells = cells.permute(1, 0, 2).reshape(uv.shape[1], -1)
    weights = weights.permute(1, 0, 2).reshape(uv.shape[1], -1)
    return _weighted_cells(fmaps, cells, weights), views


def sample_feature_maps(fmaps: torch.Tensor, uv: torch.Tensor, frame: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly read each point's own frame's (C, h, w) map, every frame in one call.

    ``fmaps`` (F,C,h,w) cover a W x H image; ``uv`` (N,2) pixel-index coordinates; ``frame`` (N,)
    the map of each point. Returns (N, C), at least float32. Same values as ``grid_sample`` with
    ``align_corners=False, padding_mode="border"``, but as one ``embedding_bag`` of 4 weighted
    cells per point: its backward accumulates into the small map instead of running
    ``grid_sample``'s backward once per frame (the CPU's slowest 2D op in a training step).
    """
    if fmaps.dim() != 4:
        raise ValueError(f"feature maps must be (F, C, h, w), got shape {tuple(fmaps.shape)}")
    _, _, h, w = fmaps.shape
    cells, weights = bilinear_taps(uv, image_size, h, w)
    return _weighted_cells(fmaps, cells + (frame.to(cells.device) * (h * w))[:, None], weights)


def bilinear_taps(uv: torch.Tensor, image_size: tuple[int, int], h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 cells (flat index into one h x w map) and bilinear weights of each pixel, shape (..., 4).

    The feature grid tiles the whole image, so pixel-index coordinate u lies at cell coordinate
    (u + 0.5) / W * w - 0.5; points in the outer half-cell ring are clamped to the edge cells
    (``grid_sample``'s border padding) instead of being blended with zeros.
    """
    uv = torch.as_tensor(uv).to(torch.float32)
    x = ((uv[..., 0] + 0.5) * (w / float(image_size[0])) - 0.5).clamp(0, w - 1)
    y = ((uv[..., 1] + 0.5) * (h / float(image_size[1])) - 0.5).clamp(0, h - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    cells = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=-1)
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=-1)
    return cells, weights


def _weighted_cells(fmaps: torch.Tensor, cells: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N,C): per row, the sum of ``weights`` times the map cells ``cells`` (flat over F·h·w)."""
    work_dtype = torch.promote_types(fmaps.dtype, torch.float32)
    table = fmaps.to(work_dtype).permute(0, 2, 3, 1).reshape(-1, fmaps.shape[1])
    return F.embedding_bag(cells, table, per_sample_weights=weights.to(work_dtype), mode="sum")
