"""Frames of a synthetic scene: ray casting its mesh (embree through trimesh) gives each camera's
depth, colour and the exact per-pixel instance (``render_view``, the ground truth the preparation
round-trip tests compare against); ``synthetic_frame`` adds sensor noise and JPEG encoding.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from ...images import encode_jpeg
from .room import SyntheticScene

JPEG_QUALITY = 92  # the raw colour frames, like a ScanNet export


@dataclass(frozen=True)
class RenderedView:
    """The generator's own truth for one camera: what the sensor sees and who it belongs to."""

    depth_m: np.ndarray  # float32 (H,W), z in the camera frame, 0 = no hit
    color: np.ndarray  # uint8 (H,W,3), no noise
    instance: np.ndarray  # int32 (H,W), objectId+1, 0 = none/unannotated
    label200: np.ndarray  # int32 (H,W), tsv id, 0 = none


class SceneRenderer:
    """A scene's mesh ready for ray casting (built once per scene: ``renderer``)."""

    def __init__(self, scene: SyntheticScene):
        import trimesh

        self.axis_align = scene.axis_align
        self.objects = scene.objects
        self.face_object = scene.vertex_object[scene.faces[:, 0]]
        v = scene.vertices[scene.faces]
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        self.face_normals = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        mesh = trimesh.Trimesh(scene.vertices, scene.faces, process=False)
        try:
            from trimesh.ray.ray_pyembree import RayMeshIntersector

            self.intersector = RayMeshIntersector(mesh)
        except ImportError:  # pragma: no cover - embreex missing: correct but ~100x slower
            from trimesh.ray.ray_triangle import RayMeshIntersector as SlowIntersector

            self.intersector = SlowIntersector(mesh)

    def render(self, pose_world: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int]) -> RenderedView:
        """Ray-cast one pinhole camera (pixel-index convention: pixel (0,0) centre at (0,0))."""
        width, height = size
        pose = self.axis_align @ np.asarray(pose_world, np.float64)
        rotation, eye = pose[:3, :3], pose[:3, 3]
        k = np.asarray(intrinsic, np.float64)
        u, v = np.meshgrid(np.arange(width), np.arange(height))
        rays_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, float)], -1).reshape(-1, 3)
        directions = rays_cam @ rotation.T
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        origins = np.broadcast_to(eye, directions.shape)
        faces, rays, hits = self.intersector.intersects_id(origins, directions, multiple_hits=False, return_locations=True)
        n = width * height
        depth = np.zeros(n, np.float32)
        instance = np.zeros(n, np.int32)
        label = np.zeros(n, np.int32)
        color = np.zeros((n, 3))
        depth[rays] = (hits - eye) @ rotation[:, 2]
        hit_object = self.face_object[faces]
        light = np.array([0.3, 0.5, 0.81])
        normals = self.face_normals[faces]
        shade = 0.45 + 0.3 * np.abs(normals @ light) + 0.25 * np.abs(np.sum(normals * directions[rays], 1))
        for k_obj in np.unique(hit_object):
            obj = self.objects[k_obj]
            sel = hit_object == k_obj
            color[rays[sel]] = obj.albedo(hits[sel]) * shade[sel, None]
            instance[rays[sel]] = obj.instance_id
            label[rays[sel]] = obj.label200
        return RenderedView(
            depth_m=depth.reshape(height, width),
            color=np.clip(color * 255, 0, 255).round().astype(np.uint8).reshape(height, width, 3),
            instance=instance.reshape(height, width),
            label200=label.reshape(height, width),
        )


_RENDERERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def renderer(scene: SyntheticScene) -> SceneRenderer:
    """The scene's renderer, built on first use and kept as long as the scene lives."""
    found = _RENDERERS.get(scene)
    if found is None:
        found = _RENDERERS[scene] = SceneRenderer(scene)
    return found


def render_view(scene: SyntheticScene, pose_world: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int]) -> RenderedView:
    """Ray-cast one pinhole camera of ``scene`` (pixel-index convention: pixel (0,0) centre at (0,0))."""
    return renderer(scene).render(pose_world, intrinsic, size)


def synthetic_frame(scene: SyntheticScene, frame: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Render one frame like a sensor would deliver it: (pose, noisy mm depth from the depth camera,
    noisy colour from the colour camera as JPEG bytes), both cameras at the pose (registered)."""
    options = scene.options
    rng = np.random.default_rng([scene.seed, scene.index, 1, frame])
    pose = scene.pose(frame)
    depth_view = render_view(scene, pose, scene.depth_intrinsic, options.depth_size)
    z = depth_view.depth_m.astype(np.float64)
    z = z + rng.normal(0, 1, z.shape) * options.depth_noise * z**2
    depth_mm = np.where(depth_view.depth_m > 0, np.clip(np.round(z * 1000), 0, 65535), 0).astype(np.uint16)
    color = render_view(scene, pose, scene.color_intrinsic, options.color_size).color.astype(np.float64)
    color = np.clip(color + rng.normal(0, options.color_noise, color.shape), 0, 255).round().astype(np.uint8)
    return pose, depth_mm, encode_jpeg(color, JPEG_QUALITY)
