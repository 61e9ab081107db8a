"""Point-to-pixel projection and feature sampling, the link between 3D points and 2D CLIP features.

Conventions (shared with ``DATA/sv`` samples): pixel-index coordinates, i.e. the centre of pixel
(0, 0) is (0, 0) and the image spans [-0.5, W-0.5) x [-0.5, H-0.5); ``intrinsic`` maps camera
coordinates straight to those coordinates (OpenCV convention); poses are camera-to-world.
Everything is torch and stays on the device of the inputs, so the same code runs in DataLoader
workers on CPU and inside the model on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    device = points.device
    width, height = int(image_size[0]), int(image_size[1])
    # Invert in float64: float32 inversion of poses with large translations costs millimetres.
    pose = torch.as_tensor(pose_cam_to_world, device=device, dtype=torch.float64)
    world_to_cam = torch.linalg.inv(pose)
    k = torch.as_tensor(intrinsic, device=device, dtype=torch.float64)

    p = points.to(torch.float64)
    cam = p @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam[:, 2]
    in_front = z > 0
    safe_z = torch.where(in_front, z, torch.ones_like(z))
    u = k[0, 0] * cam[:, 0] / safe_z + k[0, 1] * cam[:, 1] / safe_z + k[0, 2]
    v = k[1, 1] * cam[:, 1] / safe_z + k[1, 2]

    # Nearest pixel; floor(x + 0.5) keeps the half-open pixel extent [-0.5, 0.5) of pixel 0.
    col = torch.floor(u + 0.5).long()
    row = torch.floor(v + 0.5).long()
    valid = (
        in_front
        & (col >= border)
        & (col <= width - 1 - border)
        & (row >= border)
        & (row <= height - 1 - border)
    )

    if depth_m is not None:
        depth = torch.as_tensor(depth_m, device=device)
        if tuple(depth.shape) != (height, width):
            raise ValueError(f"depth map has shape {tuple(depth.shape)}, expected (H, W) = {(height, width)}")
        d = torch.zeros_like(z)
        idx = valid.nonzero(as_tuple=True)[0]
        d[idx] = depth[row[idx], col[idx]].to(torch.float64)
        valid = valid & (d > 0) & ((d - z).abs() <= depth_tolerance * d)

    uv = torch.stack([u, v], dim=1).to(points.dtype if points.is_floating_point() else torch.float32)
    return uv, valid


def sample_feature_map(fmap: torch.Tensor, uv: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly read a (C, h, w) feature map that covers a W x H image at pixel coordinates.

    The feature grid tiles the whole image, so image pixel-index coordinate u maps to the
    normalised coordinate (u + 0.5) / W * 2 - 1 of ``grid_sample`` with ``align_corners=False``
    (whose -1/+1 are the outer edges of the grid), independent of h and w. Points in the outer
    half-cell ring are clamped to the edge cells (``padding_mode="border"``) instead of being
    blended with zeros. Returns (N, C), at least float32 (CPU ``grid_sample`` lacks float16).
    """
    if fmap.dim() != 3:
        raise ValueError(f"feature map must be (C, h, w), got shape {tuple(fmap.shape)}")
    width, height = float(image_size[0]), float(image_size[1])
    work_dtype = torch.promote_types(fmap.dtype, torch.float32)
    uv = torch.as_tensor(uv, device=fmap.device).to(work_dtype)
    grid = torch.empty_like(uv)
    grid[:, 0] = (uv[:, 0] + 0.5) / width * 2.0 - 1.0
    grid[:, 1] = (uv[:, 1] + 0.5) / height * 2.0 - 1.0
    sampled = F.grid_sample(
        fmap.to(work_dtype)[None],
        grid[None, None],
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )  # (1, C, 1, N)
    return sampled[0, :, 0].T
