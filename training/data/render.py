"""
Headless CPU rendering of one object from random cameras: pyrender on EGL (Mesa llvmpipe), one context per process.

Each view draws a camera looking at the object's centroid (or, for a truncated view, past it, so part of the object
leaves the image) from a random azimuth, elevation, roll, focal length and distance, and random lights. The object
stands on a table or floor among procedural neighbours, some in front of it (``scene.py``); a random background
(plain, gradient, textured clutter or a tabletop scene) fills what the scene leaves empty; the picture then goes
through sensor noise, blur and JPEG compression. The mask and the depth come from a second, depth-only render of the
object alone: exact for the whole object, occluded parts included. Depth is metric z-depth, 0 elsewhere. The
detector-like box is drawn around the object's visible part.

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
import trimesh

# PyOpenGL picks its platform at import time: EGL renders without a display (docs/offline-data.md §3).
os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')
import pyrender  # noqa: E402

from mesc3d_training.data import scene as scene_parts  # noqa: E402
from mesc3d_training.data.scene import SceneRanges  # noqa: E402
from mesc3d_training.data.sources import LoadedObject  # noqa: E402

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
PLANES_PER_OBJECT = 3
NEIGHBOURS_PER_OBJECT = 6
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
    """Bounding-sphere diameter as a fraction of the image height."""
    truncate_probability: float = 0.2
    truncate_shift: tuple[float, float] = (0.3, 0.8)
    """A truncated view looks this many object radii beside the centre, so part of the object leaves the image
    (as detections at the image border do); its centre stays in view."""


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
    """Return a random (K (3, 3), T_cam_obj (4, 4)) looking at ``centre_m`` (or beside it, for a truncated view)."""
    fov = math.radians(rng.uniform(*ranges.vertical_fov_deg))
    focal_px = image_size / 2 / math.tan(fov / 2)
    # The sphere's silhouette half-angle a satisfies tan(a) = fill · tan(fov / 2) and sin(a) = radius / distance.
    half_angle = math.atan(rng.uniform(*ranges.fill) * math.tan(fov / 2))
    distance = radius_m / math.sin(half_angle)
    azimuth = rng.uniform(0.0, 2 * math.pi)
    elevation = math.radians(rng.uniform(*ranges.elevation_deg))
    direction = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                          math.cos(elevation) * math.cos(azimuth)])
    eye, roll = centre_m + distance * direction, math.radians(rng.uniform(*ranges.roll_deg))
    pose = look_at_pose(eye, centre_m, roll)
    if rng.uniform() < ranges.truncate_probability:
        angle = rng.uniform(0, 2 * math.pi)
        shift = rng.uniform(*ranges.truncate_shift) * radius_m
        # Move the look-at point in the image plane (camera x right, y down, expressed in the object frame).
        offset = shift * (math.cos(angle) * pose[0, :3] + math.sin(angle) * pose[1, :3])
        pose = look_at_pose(eye, centre_m + offset, roll)
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
    """Return a directional light from the camera's side of the object, above it more often than below."""
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

    def __init__(self, image_size: int, scene_ranges: SceneRanges | None = SceneRanges()):
        """
        ``scene_ranges`` None renders the object alone on a random background.

        It has no sensor effects (the v1 look; the node tests compose such renders into their own scenes).
        """
        self.image_size = image_size
        self.scene_ranges = scene_ranges
        self._renderer = pyrender.OffscreenRenderer(image_size, image_size)

    def close(self) -> None:
        self._renderer.delete()

    def render_views(self, loaded: LoadedObject, cameras: list[tuple[np.ndarray, np.ndarray]],
                     rng: np.random.Generator) -> list[dict]:
        """
        Render one dict per camera (K, T_cam_obj).

        ``rgb`` (S, S, 3) uint8 as the camera sees the scene, ``mask`` (S, S) bool and ``depth`` (S, S) metres of the
        target alone, ``box`` (4,) the detector-like box (pixel edges), ``visible`` the share of the target's pixels no
        neighbour hides.
        """
        scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0])
        for part in loaded.meshes:
            scene.add(pyrender.Mesh.from_trimesh(part, smooth=False))
        vertices = np.concatenate([part.vertices for part in loaded.meshes])
        radius = float(np.linalg.norm(vertices, axis=1).max())
        footprint = float(np.linalg.norm(vertices[:, [0, 2]], axis=1).max())
        floor_y = float(vertices[:, 1].min())
        if self.scene_ranges is None:
            return [self._render_alone(scene, K, pose, radius, rng) for K, pose in cameras]
        # Built once per object (meshes are the slow part to make and upload), placed anew in every view.
        planes = [pyrender.Mesh.from_trimesh(scene_parts.support_plane(rng, radius, self.scene_ranges), smooth=False)
                  for _ in range(PLANES_PER_OBJECT)]
        pool = scene_parts.neighbour_pool(rng, NEIGHBOURS_PER_OBJECT)
        half_widths = [float(np.linalg.norm(np.ptp(np.concatenate([p.vertices for p in parts]), axis=0)[[0, 2]]) / 2)
                       for parts in pool]
        pool_meshes = [[pyrender.Mesh.from_trimesh(part, smooth=False) for part in parts] for parts in pool]
        views = []
        for K, pose in cameras:
            eye = -pose[:3, :3].T @ pose[:3, 3]  # camera centre, object frame
            distance = float(np.linalg.norm(eye))
            plane_pose = trimesh.transformations.rotation_matrix(rng.uniform(0, 2 * math.pi), [0, 1, 0])
            # The top sits 0.5 mm under the object's lowest point: no z-fighting with a flat base.
            plane_pose[:3, 3] = [rng.uniform(-0.5, 0.5) * radius, floor_y - 5e-4, rng.uniform(-0.5, 0.5) * radius]
            clutter = [(planes[int(rng.integers(len(planes)))], plane_pose)]
            for index, neighbour_pose in scene_parts.place_neighbours(rng, half_widths, floor_y, footprint, radius,
                                                                      eye[[0, 2]], self.scene_ranges):
                clutter += [(mesh, neighbour_pose) for mesh in pool_meshes[index]]
            far = distance + 25 * radius + 1.0
            wide = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                                             znear=max(0.2 * (distance - 1.5 * radius), 1e-3), zfar=far)
            tight = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                                              znear=max(distance - 1.5 * radius, 1e-3) * 0.5,
                                              zfar=distance + 1.5 * radius + 1.0)
            camera_to_world_gl = np.linalg.inv(pose) @ OPENCV_TO_OPENGL
            level = rng.uniform(0.1, 0.5)
            scene.ambient_light = np.array([level, level, level, 1.0])
            tint = rng.uniform(0.8, 1.0, 3)
            nodes = [scene.add(pyrender.DirectionalLight(color=tint, intensity=rng.uniform(1.0, 5.5)),
                               pose=_random_light_pose(rng, camera_to_world_gl)),
                     scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=rng.uniform(0.2, 1.5)),
                               pose=_random_light_pose(rng, camera_to_world_gl))]
            # Target alone, depth only: the exact mask and depth (tight near/far planes for depth precision).
            camera_node = scene.add(tight, pose=camera_to_world_gl)
            depth = self._renderer.render(scene, flags=pyrender.RenderFlags.DEPTH_ONLY
                                          | pyrender.RenderFlags.SKIP_CULL_FACES)
            scene.remove_node(camera_node)
            nodes.append(scene.add(wide, pose=camera_to_world_gl))
            clutter_nodes = [scene.add(mesh, pose=mesh_pose) for mesh, mesh_pose in clutter]
            # Catalog models mix face windings and single-sided sheets; back-face culling would punch holes in them.
            color, scene_depth = self._renderer.render(scene, flags=pyrender.RenderFlags.SKIP_CULL_FACES)
            mask = depth > 0
            visible = scene_parts.visible_mask(depth, scene_depth)
            if visible.sum() < self.scene_ranges.min_visible * mask.sum():  # hidden too much: keep only the table
                for node in clutter_nodes[1:]:
                    scene.remove_node(node)
                clutter_nodes = clutter_nodes[:1]
                color, scene_depth = self._renderer.render(scene, flags=pyrender.RenderFlags.SKIP_CULL_FACES)
                visible = scene_parts.visible_mask(depth, scene_depth)
            for node in nodes + clutter_nodes:
                scene.remove_node(node)
            background, _ = make_background(rng, self.image_size)
            rgb = np.where((scene_depth > 0)[..., None], color[..., :3], background)
            box = scene_parts.detector_box(rng, visible if visible.any() else mask, self.scene_ranges) \
                if mask.any() else np.zeros(4)
            views.append({'rgb': scene_parts.sensor(rng, rgb, self.scene_ranges), 'mask': mask,
                          'depth': depth.astype(np.float64), 'box': box,
                          'visible': float(visible.sum() / max(mask.sum(), 1))})
        return views

    def _render_alone(self, scene: pyrender.Scene, K: np.ndarray, pose: np.ndarray, radius: float,
                      rng: np.random.Generator) -> dict:
        """One view of the object alone on a random background (``scene_ranges`` None)."""
        distance = float(np.linalg.norm(pose[:3, 3]))
        camera = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                                           znear=max(distance - 1.5 * radius, 1e-3) * 0.5,
                                           zfar=distance + 1.5 * radius + 1.0)
        camera_to_world_gl = np.linalg.inv(pose) @ OPENCV_TO_OPENGL
        level = rng.uniform(0.15, 0.45)
        scene.ambient_light = np.array([level, level, level, 1.0])
        nodes = [scene.add(camera, pose=camera_to_world_gl),
                 scene.add(pyrender.DirectionalLight(color=rng.uniform(0.85, 1.0, 3), intensity=rng.uniform(1.5, 5.0)),
                           pose=_random_light_pose(rng, camera_to_world_gl)),
                 scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=rng.uniform(0.2, 1.5)),
                           pose=_random_light_pose(rng, camera_to_world_gl))]
        color, depth = self._renderer.render(scene, flags=pyrender.RenderFlags.SKIP_CULL_FACES)
        for node in nodes:
            scene.remove_node(node)
        mask = depth > 0
        background, _ = make_background(rng, self.image_size)
        box = scene_parts.mask_box(mask) if mask.any() else np.zeros(4)
        return {'rgb': np.where(mask[..., None], color[..., :3], background), 'mask': mask,
                'depth': depth.astype(np.float64), 'box': box, 'visible': 1.0}
