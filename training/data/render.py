"""Headless CPU rendering of one object from random cameras: pyrender on EGL (Mesa llvmpipe), one context per process.

Each view draws a camera looking at the object's centroid from a random azimuth, elevation, roll, focal length and
distance, random lights, and a random background (plain, gradient, textured clutter or a tabletop scene) composited
at render time through the object mask: the RGB keeps the background, the mask marks the object. Depth is the
metric z-depth of the object, 0 elsewhere.

Conventions: intrinsics ``K`` use OpenCV pixel centres (pixel (0, 0) is centred at 0.0); pyrender's
``IntrinsicsCamera`` puts pixel edges at integers, hence ``cx_gl = cx + 0.5`` (checked by test_data.py through the
projection of the sampled points into the mask). Poses are OpenCV (x right, y down, z forward); pyrender wants the
OpenGL camera-to-world matrix, which is the inverse pose with the y and z axes negated.
"""

from __future__ import annotations

import colorsys
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

# PyOpenGL picks its platform at import time: EGL renders without a display (docs/offline-data.md §3).
os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')
import pyrender  # noqa: E402

from mesc3d_training.data.sources import LoadedObject  # noqa: E402

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
BACKGROUND_KINDS = ('plain', 'gradient', 'clutter', 'tabletop')


@dataclass(frozen=True)
class ViewRanges:
    """Where random cameras come from. Ranges are uniform; angles in degrees."""

    elevation_deg: tuple[float, float] = (5.0, 60.0)
    """Above the object's horizon: tabletop and room cameras look down at objects, rarely from below."""
    roll_deg: tuple[float, float] = (-8.0, 8.0)
    """Small camera roll, as with a hand-held or slightly tilted robot camera."""
    vertical_fov_deg: tuple[float, float] = (35.0, 65.0)
    """Spans common RGB-D cameras (RealSense D435 colour ≈ 42°, wide webcams ≈ 60°)."""
    fill: tuple[float, float] = (0.45, 0.9)
    """Bounding-sphere diameter as a fraction of the image height: the object is always fully in view."""


def look_at_pose(eye: np.ndarray, target: np.ndarray, roll_rad: float) -> np.ndarray:
    """(4, 4) T_cam_obj, OpenCV axes, for a camera at ``eye`` looking at ``target`` with the object's +Y up."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))  # x right; elevation < 90° keeps this non-zero
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    right, down = c * right + s * down, -s * right + c * down  # rotate the image plane about the optical axis
    rotation = np.stack([right, down, forward])  # rows: camera axes in the object frame
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = -rotation @ eye
    return pose


def sample_camera(rng: np.random.Generator, centre_m: np.ndarray, radius_m: float, image_size: int,
                  ranges: ViewRanges) -> tuple[np.ndarray, np.ndarray]:
    """A random (K (3, 3), T_cam_obj (4, 4)) whose camera looks at ``centre_m`` and sees the whole bounding sphere."""
    fov = math.radians(rng.uniform(*ranges.vertical_fov_deg))
    focal_px = image_size / 2 / math.tan(fov / 2)
    # The sphere's silhouette half-angle a satisfies tan(a) = fill · tan(fov / 2) and sin(a) = radius / distance.
    half_angle = math.atan(rng.uniform(*ranges.fill) * math.tan(fov / 2))
    distance = radius_m / math.sin(half_angle)
    azimuth = rng.uniform(0.0, 2 * math.pi)
    elevation = math.radians(rng.uniform(*ranges.elevation_deg))
    direction = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                          math.cos(elevation) * math.cos(azimuth)])
    pose = look_at_pose(centre_m + distance * direction, centre_m, math.radians(rng.uniform(*ranges.roll_deg)))
    principal = (image_size - 1) / 2
    K = np.array([[focal_px, 0.0, principal], [0.0, focal_px, principal], [0.0, 0.0, 1.0]])
    return K, pose


# ---- backgrounds -----------------------------------------------------------------------------------------------
def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """Mostly muted colours, as in homes and labs; uniform RGB would be far more saturated than real scenes."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform() ** 2 * 0.8, rng.uniform(0.15, 0.95))
    return tuple(int(v * 255) for v in rgb)


def _clutter(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    """Random filled rectangles, ellipses, polygons and lines: out-of-focus household clutter, drawn in place."""
    size = canvas.shape[0]
    for _ in range(count):
        kind = rng.integers(0, 4)
        color = _random_color(rng)
        centre = tuple(int(v) for v in rng.integers(-size // 8, size + size // 8, 2))
        extent = tuple(int(v) for v in rng.integers(size // 20, size // 3, 2))
        if kind == 0:
            cv2.rectangle(canvas, (centre[0] - extent[0], centre[1] - extent[1]),
                          (centre[0] + extent[0], centre[1] + extent[1]), color, -1)
        elif kind == 1:
            cv2.ellipse(canvas, centre, extent, float(rng.uniform(0, 180)), 0, 360, color, -1)
        elif kind == 2:
            polygon = rng.integers(-size // 8, size + size // 8, (int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(canvas, [polygon], color)
        else:
            end = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(canvas, centre, end, color, int(rng.integers(1, 6)))


def make_background(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, str]:
    """(S, S, 3) uint8 RGB background and its kind."""
    kind = BACKGROUND_KINDS[int(rng.integers(0, len(BACKGROUND_KINDS)))]
    size = image_size
    if kind == 'plain':
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        canvas[:] = _random_color(rng)
    elif kind == 'gradient':
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
        ramp = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)[..., None]
        canvas = ((1 - ramp) * np.array(_random_color(rng)) + ramp * np.array(_random_color(rng))).astype(np.uint8)
    elif kind == 'clutter':
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        canvas[:] = _random_color(rng)
        _clutter(rng, canvas, int(rng.integers(10, 40)))
    else:  # tabletop: a wall above a textured table surface, a few objects standing about
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        horizon = int(rng.integers(0, size // 2))
        canvas[:horizon] = _random_color(rng)
        canvas[horizon:] = _random_color(rng)
        stripes = (np.sin(np.arange(size) / rng.uniform(1.5, 6.0)) * rng.uniform(5, 25)).astype(np.int16)
        surface = canvas[horizon:].astype(np.int16) + stripes[None, :, None]
        canvas[horizon:] = np.clip(surface, 0, 255).astype(np.uint8)
        _clutter(rng, canvas, int(rng.integers(2, 10)))
    sigma = rng.uniform(0.0, 3.0)  # depth of field: the background is rarely in focus
    if sigma > 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    return canvas, kind


# ---- renderer --------------------------------------------------------------------------------------------------
def _random_light_pose(rng: np.random.Generator, camera_to_world_gl: np.ndarray) -> np.ndarray:
    """A directional light from the camera's side of the object, above it more often than below."""
    azimuth = rng.uniform(-math.pi * 0.6, math.pi * 0.6)
    elevation = rng.uniform(-0.2, 1.3)
    # Light direction in the OpenGL camera frame (the light shines along its own -z).
    source = np.array([math.sin(azimuth) * math.cos(elevation), math.sin(elevation),
                       math.cos(azimuth) * math.cos(elevation)])
    z_axis = camera_to_world_gl[:3, :3] @ source
    x_axis = np.cross([0.0, 1.0, 0.0], z_axis)
    if np.linalg.norm(x_axis) < 1e-6:
        x_axis = np.array([1.0, 0.0, 0.0])
    x_axis /= np.linalg.norm(x_axis)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x_axis, np.cross(z_axis, x_axis), z_axis], axis=1)
    return pose


class ObjectRenderer:
    """Renders one object's views; create once per process (it owns the EGL context)."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self._renderer = pyrender.OffscreenRenderer(image_size, image_size)

    def close(self) -> None:
        self._renderer.delete()

    def render_views(self, loaded: LoadedObject, cameras: list[tuple[np.ndarray, np.ndarray]],
                     rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per camera (K, T_cam_obj): (rgb (S, S, 3) uint8 with background, mask (S, S) bool, depth (S, S) metres)."""
        scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0])
        for part in loaded.meshes:
            scene.add(pyrender.Mesh.from_trimesh(part, smooth=False))
        radius = max(float(np.linalg.norm(part.vertices, axis=1).max()) for part in loaded.meshes)
        views = []
        for K, pose in cameras:
            distance = float(np.linalg.norm(pose[:3, 3]))  # camera centre to the object-frame origin
            camera = pyrender.IntrinsicsCamera(
                fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                znear=max(distance - 1.5 * radius, 1e-3) * 0.5, zfar=distance + 1.5 * radius + 1.0)
            camera_to_world_gl = np.linalg.inv(pose) @ OPENCV_TO_OPENGL
            level = rng.uniform(0.15, 0.45)
            scene.ambient_light = np.array([level, level, level, 1.0])
            tint = rng.uniform(0.85, 1.0, 3)
            nodes = [scene.add(camera, pose=camera_to_world_gl),
                     scene.add(pyrender.DirectionalLight(color=tint, intensity=rng.uniform(1.5, 5.0)),
                               pose=_random_light_pose(rng, camera_to_world_gl)),
                     scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=rng.uniform(0.2, 1.5)),
                               pose=_random_light_pose(rng, camera_to_world_gl))]
            # Catalog models mix face windings and single-sided sheets; back-face culling would punch holes in them.
            color, depth = self._renderer.render(scene, flags=pyrender.RenderFlags.SKIP_CULL_FACES)
            for node in nodes:
                scene.remove_node(node)
            mask = depth > 0
            background, _ = make_background(rng, self.image_size)
            rgb = np.where(mask[..., None], color[..., :3], background)
            views.append((rgb, mask, depth.astype(np.float64)))
        return views
