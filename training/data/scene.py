"""
What surrounds the target object in a view, as the node sees it.

A table or floor it stands on, neighbours beside and partly in front, a camera sensor's noise, blur and compression, and
the detector's box.

The target is rendered inside this scene for the RGB only; its mask and depth come from a render of the target alone,
so they stay exact (the whole object, occluded parts included) while the picture shows it occluded and cluttered.
The box is what a detector reports: the *visible* part's bounding box, jittered, clipped at the image border.
Every draw comes from the object's generator, so a view's bytes depend only on (seed, object id, view).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np
import trimesh

from mesc3d_training.data import procedural

NEIGHBOUR_KINDS = tuple(kind for kind, _, _ in procedural.KINDS)


@dataclass(frozen=True)
class SceneRanges:
    """How cluttered and degraded views are. Probabilities per view; sizes relative to the target's radius."""

    floor_probability: float = 0.35
    """A floor spreads to the horizon; otherwise a table top whose edge is often in view."""
    neighbours: tuple[int, int] = (0, 4)
    front_probability: float = 0.4
    """A neighbour placed between the camera and the target, hiding part of it."""
    min_visible: float = 0.3
    """Views where neighbours hide more than 70 % of the target are re-rendered without them."""
    box_jitter: float = 0.05
    """Detector box noise: centre ± this share of the size, each side × exp(± 1.5 × this)."""
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    """Gaussian sensor noise, in 8-bit levels."""
    blur_probability: float = 0.3
    motion_blur_probability: float = 0.1
    jpeg_probability: float = 0.7
    jpeg_quality: tuple[int, int] = (35, 95)


def _muted(rng: np.random.Generator) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform() ** 2 * 0.6, rng.uniform(0.2, 0.9))
    return np.array([*(np.asarray(rgb) * 255), 255], dtype=np.uint8)


def support_plane(rng: np.random.Generator, radius: float, ranges: SceneRanges) -> trimesh.Trimesh:
    """
    Return a horizontal plane (Y up, metres, top at y = 0, centred on the origin).

    A large floor or a table top, tiled or planked. Callers place it under the object with a pose.
    """
    half = radius * (rng.uniform(12, 20) if rng.uniform() < ranges.floor_probability else rng.uniform(2.0, 5.0))
    cells = int(rng.integers(4, 24))
    edges = np.linspace(-half, half, cells + 1)
    xx, zz = np.meshgrid(edges, edges, indexing='ij')
    vertices = np.stack([xx.ravel(), np.zeros(xx.size), zz.ravel()], axis=1)
    i, j = np.meshgrid(np.arange(cells), np.arange(cells), indexing='ij')
    a = (i * (cells + 1) + j).ravel()
    # Each cell is two triangles with its own colour; normals face +y (up, towards cameras above the plane).
    faces = np.concatenate([np.stack([a, a + 1, a + cells + 1], 1), np.stack([a + 1, a + cells + 2, a + cells + 1], 1)])
    base, other = _muted(rng), _muted(rng)
    if rng.uniform() < 0.5:  # planks: stripes along one axis
        mix = (np.sin(i.ravel() * 12.9898) * 0.5 + 0.5) * 0.35
    else:  # tiles: a checkerboard of two colours
        mix = ((i + j).ravel() % 2) * 1.0
    cell_colors = (base[None, :3] * (1 - mix[:, None]) + other[None, :3] * mix[:, None]).astype(np.uint8)
    colors = np.concatenate([np.tile(cell_colors, (2, 1)), np.full((2 * len(a), 1), 255, np.uint8)], axis=1)
    plane = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    plane.visual = trimesh.visual.ColorVisuals(plane, face_colors=colors)
    return plane


def neighbour_pool(rng: np.random.Generator, count: int) -> list[list[trimesh.Trimesh]]:
    """
    ``count`` procedural household objects (Y up, metres, standing on y = 0, centred on the y axis).

    Built once per target object and placed anew in each view.
    """
    pool = []
    for _ in range(count):
        kind = NEIGHBOUR_KINDS[int(rng.integers(len(NEIGHBOUR_KINDS)))]
        parts = procedural.build(f'proc_{kind}_{int(rng.integers(10**6)):06d}')
        vertices = np.concatenate([p.vertices for p in parts])
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        for part in parts:
            part.apply_translation([-(low[0] + high[0]) / 2, -low[1], -(low[2] + high[2]) / 2])
        pool.append(parts)
    return pool


def place_neighbours(rng: np.random.Generator, half_widths: list[float], floor_y: float, footprint: float,
                     radius: float, camera_xz: np.ndarray, ranges: SceneRanges) -> list[tuple[int, np.ndarray]]:
    """
    (pool index, (4, 4) pose in the object frame) of the neighbours of one view, never intersecting the target.

    ``half_widths``: each pool object's horizontal half diagonal; ``camera_xz``: the camera's horizontal position
    (object frame); a front neighbour stands on the line to it, hiding part of the target.
    """
    count = int(rng.integers(ranges.neighbours[0], ranges.neighbours[1] + 1))
    front = rng.uniform() < ranges.front_probability
    chosen = rng.permutation(len(half_widths))[:count + int(front)]
    horizontal = float(np.linalg.norm(camera_xz))
    placed = []
    for order, index in enumerate(chosen):
        half = half_widths[index]
        if front and order == len(chosen) - 1:  # the front one: towards the camera, at most 60 % of the way there
            direction = camera_xz / max(horizontal, 1e-9)
            distance = footprint + half + rng.uniform(0.0, 0.5) * radius
            if distance > 0.6 * horizontal:
                continue
            position = direction * distance + np.array([-direction[1], direction[0]]) * rng.uniform(-0.6, 0.6) * radius
        else:
            angle = rng.uniform(0, 2 * math.pi)
            distance = footprint + half + rng.uniform(0.05, 2.0) * radius
            position = np.array([math.cos(angle), math.sin(angle)]) * distance
        pose = trimesh.transformations.rotation_matrix(rng.uniform(0, 2 * math.pi), [0, 1, 0])
        pose[:3, 3] = [position[0], floor_y, position[1]]
        placed.append((int(index), pose))
    return placed


def visible_mask(target_depth: np.ndarray, scene_depth: np.ndarray) -> np.ndarray:
    """(S, S) bool: target pixels no other surface covers (2 mm + 0.5 % of the depth of slack)."""
    slack = 0.002 + 0.005 * target_depth
    return (target_depth > 0) & (scene_depth > 0) & (scene_depth >= target_depth - slack)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """
    Return the (4,) float64 x0, y0, x1, y1 in pixel-edge coordinates around a non-empty mask.

    What a detector would report for exactly that mask: the convention of the training crops, the generator's boxes
    and the demo's ground-truth detections. Torch-free, so the demo publisher (a camera driver) imports it too.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError('empty mask: no object pixels to crop around')
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def detector_box(rng: np.random.Generator, visible: np.ndarray, ranges: SceneRanges) -> np.ndarray:
    """(4,) x0, y0, x1, y1 pixel edges: the visible part's box with detector noise, clipped to the image."""
    x0, y0, x1, y1 = mask_box(visible)
    width, height = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2 + rng.uniform(-1, 1) * ranges.box_jitter * width
    cy = (y0 + y1) / 2 + rng.uniform(-1, 1) * ranges.box_jitter * height
    width *= math.exp(rng.uniform(-1.5, 1.5) * ranges.box_jitter)
    height *= math.exp(rng.uniform(-1.5, 1.5) * ranges.box_jitter)
    size_y, size_x = visible.shape
    box = np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])
    box[[0, 2]] = np.clip(box[[0, 2]], 0, size_x)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, size_y)
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:  # jitter cannot make a slit: fall back to the exact box
        box = np.array([x0, y0, x1, y1], dtype=np.float64)
    return box


def sensor(rng: np.random.Generator, rgb: np.ndarray, ranges: SceneRanges) -> np.ndarray:
    """(S, S, 3) uint8 RGB through a cheap camera: blur (focus or motion), noise, then JPEG compression."""
    image = rgb.astype(np.float32)
    if rng.uniform() < ranges.blur_probability:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2))
    if rng.uniform() < ranges.motion_blur_probability:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0 / length
        rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        image = cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
    image += rng.normal(0.0, rng.uniform(*ranges.noise_sigma), image.shape).astype(np.float32)
    out = np.clip(np.round(image), 0, 255).astype(np.uint8)
    if rng.uniform() < ranges.jpeg_probability:
        quality = int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1))
        ok, data = cv2.imencode('.jpg', out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)
