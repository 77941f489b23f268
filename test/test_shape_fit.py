"""
The visible surface (mesc3d_ros/visible_surface.py) and the shape fit (mesc3d_ros/shape_fit.py) on synthetic depth.

The depth has a known pose: a cuboid standing on a tilted table, seen by a pinhole camera, with the table in the box,
holes, NaN, noise, flying pixels and a neighbour; the pose must come back within 1 cm and the scale within 5 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from mesc3d_ros import geometry
from mesc3d_ros.shape_fit import FitSettings, fit_shape, visible_mask
from mesc3d_ros.visible_surface import (SurfaceSettings, front_depth, occluding_boxes, seen_through, support_plane,
                                        visible_surface)

WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
EXTENTS = np.array([1.0, 0.7, 0.5])
"""Cuboid side lengths before the unit-ball normalisation: no symmetry that would make the scale ambiguous."""


def cuboid_surface(count: int, seed: int) -> np.ndarray:
    """(count, 3) points uniform on the surface of the EXTENTS cuboid, centred at 0 (not yet unit-ball scaled)."""
    rng = np.random.default_rng(seed)
    areas = np.array([EXTENTS[1] * EXTENTS[2], EXTENTS[0] * EXTENTS[2], EXTENTS[0] * EXTENTS[1]])
    axis = rng.choice(3, size=count, p=areas / areas.sum())
    points = (rng.random((count, 3)) - 0.5) * EXTENTS
    points[np.arange(count), axis] = np.where(rng.random(count) < 0.5, -0.5, 0.5) * EXTENTS[axis]
    return points


UNIT_RADIUS = float(np.linalg.norm(EXTENTS / 2))
"""The cuboid's largest point norm about its centroid: the unit-ball scale (its centroid is its centre)."""
PREDICTED = cuboid_surface(1024, seed=7)
"""The 'predicted' shape: a 1,024-point sample of the true one (its corners are not sampled exactly)."""
PREDICTED_SCALE = float(np.linalg.norm(PREDICTED - PREDICTED.mean(axis=0), axis=1).max()) / UNIT_RADIUS
"""The sample's unit-ball radius in true unit radii: the fitted radius of the prediction is radius × this."""


def pose_for(centre: np.ndarray) -> np.ndarray:
    """Return the shape rotation the pipeline uses for an object at ``centre``: its box centre's virtual camera."""
    u, v = (K @ centre)[:2] / centre[2]
    return geometry.virtual_camera_rotation(K, u, v)


def render(centre: np.ndarray, radius_m: float, seed: int = 0, holes: float = 0.0, noise_m: float = 0.0,
           flying: bool = False, neighbour: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """
    Render (H, W) float32 z-depth metres of the cuboid on a table plane under it, and the (4,) box around it.

    The cuboid is the unit-ball shape × radius_m, rotated by pose_for, at ``centre``; the box bounds its visible
    pixels.
    """
    rng = np.random.default_rng(seed)
    shape = cuboid_surface(400_000, seed + 1) / UNIT_RADIUS  # dense unit-ball surface: a z-buffer without gaps
    points = centre + radius_m * shape @ pose_for(centre).T  # (M, 3) metres, optical frame
    uv = np.round((points @ K.T)[:, :2] / points[:, 2:3]).astype(np.int64)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < WIDTH) & (uv[:, 1] >= 0) & (uv[:, 1] < HEIGHT)
    flat = uv[inside, 1] * WIDTH + uv[inside, 0]
    depth = np.full(HEIGHT * WIDTH, np.inf)
    np.minimum.at(depth, flat, points[inside, 2])
    depth = depth.reshape(HEIGHT, WIDTH)
    obj = np.isfinite(depth)
    rows, cols = np.nonzero(obj)
    box = np.array([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
    # The table: a plane through the object's lowest point (largest y), tilted towards the camera like a floor
    # seen from above; the object sits on it, so the table fills the box around and below the object.
    normal = np.array([0.0, -np.cos(0.4), np.sin(0.4)])  # n·x = d, n pointing away from the camera
    offset = float(np.max(points @ normal))
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # (H, W, 3), z = 1
    along = rays @ normal
    table = np.where(along > 1e-6, offset / np.where(along > 1e-6, along, 1.0), np.inf)
    depth = np.minimum(depth, table)
    if neighbour:  # another object's edge at the right of the box, nearer than the cuboid
        right = int(box[2]) - max(3, int(0.12 * (box[2] - box[0])))
        depth[int(box[1]):int(box[3]), right:int(box[2]) + 20] = centre[2] - 0.3 * radius_m
    depth[~np.isfinite(depth)] = 0.0
    if noise_m:
        depth += rng.normal(0.0, noise_m, depth.shape) * (depth > 0)
    if flying:  # interpolated readings between object and table along the silhouette
        edge = obj & ~np.roll(obj, 1, axis=1)
        depth[np.roll(edge, -1, axis=1)] = 0.5 * (depth[np.roll(edge, -1, axis=1)] + depth[edge] + 0.3)
    if holes:
        depth[rng.random(depth.shape) < holes] = 0.0
        r0, c0 = int((box[1] + box[3]) / 2), int((box[0] + box[2]) / 2)
        depth[r0 - 4:r0 + 4, c0 - 6:c0 + 6] = np.nan
    return depth.astype(np.float32), box


def fit_scene(depth: np.ndarray, box: np.ndarray, centre_true: np.ndarray, radius_true: float):
    """Visible surface + fit as the pipeline runs them; the prediction is a 1,024-point sample of the true shape."""
    window = geometry.DepthWindow()
    surface = visible_surface(depth, K, box, window, 0.81, SurfaceSettings())
    assert surface is not None
    unit = geometry.normalise_shape(PREDICTED)  # (N, 3) unit ball, shape frame
    view = geometry.box_view(K, box)
    ray = view.ray
    start = geometry.place(view, 1.0, surface.front_depth_m / ray[2], True, geometry.PlacementPrior())
    q = unit @ pose_for(centre_true).T
    return surface, fit_shape(q, surface.points, start.radius_m, ray, K, box, FitSettings())


CASES = {
    'clean': {},
    'holes_nan_noise': {'holes': 0.3, 'noise_m': 0.003},
    'flying_pixels': {'flying': True, 'noise_m': 0.002},
    'neighbour_in_box': {'neighbour': True, 'holes': 0.1},
}


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('centre', [np.array([0.0, 0.05, 0.9]), np.array([0.3, 0.15, 1.6])], ids=['near', 'off_axis'])
def test_fit_recovers_translation_within_1cm_and_scale_within_5pct(case: str, centre: np.ndarray) -> None:
    radius = 0.15
    depth, box = render(centre, radius, **CASES[case])
    surface, fit = fit_scene(depth, box, centre, radius)
    assert fit.accepted, fit.reason
    assert np.linalg.norm(fit.centre - centre) < 0.01, (fit.centre, centre)
    assert abs(fit.radius_m / (radius * PREDICTED_SCALE) - 1) < 0.05, (fit.radius_m, radius * PREDICTED_SCALE)
    # The table under the object is not part of its surface: every kept reading is on (or near) the cuboid.
    local = (surface.points - centre) @ pose_for(centre) / radius * UNIT_RADIUS  # back into cuboid units
    outside = np.max(np.abs(local) - EXTENTS / 2, axis=1)
    assert np.mean(outside < 0.05) > 0.95


@pytest.mark.parametrize('box_error', [0.7, 1.4])
def test_fit_recovers_the_scale_when_the_box_estimate_is_far_off(box_error: float) -> None:
    """
    Recover the scale although the box-based radius is often 20-30 % off (a box bounds a silhouette, not a ball).

    The fit starts its scale from the visible surface's spread instead, so its bounded rounds
    (FitSettings.max_iterations) still end within 5 % of the scale and 1 cm of the pose.
    """
    centre, radius = np.array([0.1, 0.05, 1.2]), 0.15
    depth, box = render(centre, radius, holes=0.1, noise_m=0.002)
    surface = visible_surface(depth, K, box, geometry.DepthWindow(), 0.81, SurfaceSettings())
    ray = geometry.box_view(K, box).ray
    q = geometry.normalise_shape(PREDICTED) @ pose_for(centre).T
    fit = fit_shape(q, surface.points, box_error * radius * PREDICTED_SCALE, ray, K, box, FitSettings())
    assert fit.accepted, fit.reason
    assert np.linalg.norm(fit.centre - centre) < 0.01, (fit.centre, centre)
    assert abs(fit.radius_m / (radius * PREDICTED_SCALE) - 1) < 0.05, (fit.radius_m, radius * PREDICTED_SCALE)


def test_without_the_support_plane_the_table_would_be_taken_for_the_object() -> None:
    """The ring around the box sees the table: its plane is found, with the normal it was rendered with."""
    centre = np.array([0.0, 0.05, 0.9])
    depth, box = render(centre, 0.15)
    normal, offset = support_plane(depth, K, box, geometry.DepthWindow(), SurfaceSettings())
    assert np.degrees(np.arccos(abs(normal @ np.array([0.0, -np.cos(0.4), np.sin(0.4)])))) < 1.0


def test_no_surface_when_the_box_has_no_valid_depth() -> None:
    depth = np.full((HEIGHT, WIDTH), np.nan, dtype=np.float32)
    assert visible_surface(depth, K, np.array([100.0, 100.0, 200.0, 220.0]), geometry.DepthWindow(), 0.81,
                           SurfaceSettings()) is None
    depth[:] = 0.0
    assert visible_surface(depth, K, np.array([100.0, 100.0, 200.0, 220.0]), geometry.DepthWindow(), 0.81,
                           SurfaceSettings()) is None


def test_front_depth_is_the_nearest_dominant_mode_not_a_few_near_outliers() -> None:
    rng = np.random.default_rng(0)
    depths = np.concatenate([rng.normal(1.0, 0.005, 300), rng.normal(2.0, 0.005, 900), [0.5, 0.52, 0.55]])
    assert front_depth(depths, 0.02, 0.25) == pytest.approx(1.0, abs=0.01)


def test_visible_side_of_a_sphere_is_the_half_facing_the_camera() -> None:
    rng = np.random.default_rng(0)
    sphere = rng.normal(size=(2000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    seen = visible_mask(sphere, np.array([0.0, 0.0, 1.0]), 0.12, 0.15)
    # A sparse sample leaves rim cells holding only far-side points: a few of those pass, nothing else does.
    assert np.mean(sphere[seen, 2] < 0.2) > 0.95
    assert np.mean(seen[sphere[:, 2] < -0.5]) > 0.97  # the near cap
    assert 0.35 < seen.mean() < 0.6


def test_a_poor_fit_is_rejected() -> None:
    """A shape that cannot explain the surface (a thin rod against a cuboid) is rejected, not published as a fit."""
    centre = np.array([0.0, 0.05, 0.9])
    depth, box = render(centre, 0.15)
    surface = visible_surface(depth, K, box, geometry.DepthWindow(), 0.81, SurfaceSettings())
    rod = geometry.normalise_shape(np.stack([np.zeros(1024), np.zeros(1024), np.linspace(-1, 1, 1024)], axis=1))
    ray = geometry.box_view(K, box).ray
    fit = fit_shape(rod @ pose_for(centre).T, surface.points, 0.15, ray, K, box, FitSettings())
    assert not fit.accepted and fit.reason


def frame_in_front_of_a_wall(frame_z: float, wall_z: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) z-depth of a square picture frame (border 12 % of its side) before a wall, and the frame's box."""
    depth = np.full((HEIGHT, WIDTH), wall_z, dtype=np.float32)
    x0, y0, side = 250, 170, 140
    border = int(0.12 * side)
    depth[y0:y0 + side, x0:x0 + side] = frame_z
    depth[y0 + border:y0 + side - border, x0 + border:x0 + side - border] = wall_z
    return depth, np.array([x0 - 0.5, y0 - 0.5, x0 + side - 0.5, y0 + side - 0.5])


def test_a_frame_like_object_is_found_away_from_the_box_centre() -> None:
    """The box centre sees the wall (the support plane): the object is the frame at the box edges, not nothing."""
    depth, box = frame_in_front_of_a_wall(1.2, 2.0)
    surface = visible_surface(depth, K, box, geometry.DepthWindow(), 0.81, SurfaceSettings())
    assert surface is not None
    assert surface.front_depth_m == pytest.approx(1.2, abs=0.01)
    np.testing.assert_allclose(surface.points[:, 2], 1.2, atol=1e-6)


def test_an_object_behind_another_detection_takes_its_own_surface_not_the_nearer_one() -> None:
    """
    A nearer detected object covers the box centre of one behind it (a plant before a chair).

    Alone, the far box's front is the near object's; without the near box's pixels (occluding_boxes) it is the far
    object's own, and the shape fit places it within 2 cm (a third of its front is hidden: the unoccluded cases
    above hold 1 cm). The near box, smaller, keeps its pixels.
    """
    centre, radius = np.array([0.0, 0.05, 1.6]), 0.15
    depth, box = render(centre, radius)
    x0, y0, x1, y1 = box
    near_box = np.array([x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0), x0 + 0.75 * (x1 - x0), y1 + 20.0])
    depth[int(near_box[1]):int(near_box[3]) + 1, int(near_box[0]):int(near_box[2]) + 1] = 1.0  # a slab at 1 m
    boxes = np.array([box, near_box])
    window, settings = geometry.DepthWindow(), SurfaceSettings()
    alone = [visible_surface(depth, K, b, window, 0.81, settings) for b in boxes]
    assert alone[0].front_depth_m == pytest.approx(1.0, abs=0.01)  # the far box's centre sees the slab
    np.testing.assert_array_equal(occluding_boxes(boxes, alone, 0, settings), boxes[1:])
    assert occluding_boxes(boxes, alone, 1, settings).shape == (0, 4)
    surface = visible_surface(depth, K, box, window, 0.81, settings, exclude=boxes[1:])
    assert surface.front_depth_m > 1.4
    unit = geometry.normalise_shape(PREDICTED)
    view = geometry.box_view(K, box)
    ray = view.ray
    start = geometry.place(view, 1.0, surface.front_depth_m / ray[2], True, geometry.PlacementPrior())
    fit = fit_shape(unit @ pose_for(centre).T, surface.points, start.radius_m, ray, K, box, FitSettings())
    assert fit.accepted, fit.reason
    assert np.linalg.norm(fit.centre - centre) < 0.02, (fit.centre, centre)


def test_seen_through_is_free_space_in_front_of_a_reading_not_behind_it_or_on_a_hole() -> None:
    depth = np.full((HEIGHT, WIDTH), 2.0, dtype=np.float32)
    depth[:, :10] = np.nan  # a hole at the left edge
    ray = np.linalg.inv(K) @ np.array([320.0, 240.0, 1.0])  # (3,) z = 1
    edge = np.linalg.inv(K) @ np.array([5.0, 240.0, 1.0])
    points = np.array([1.0 * ray, 1.98 * ray, 2.5 * ray, 1.0 * edge, -1.0 * ray])  # (5, 3) metres
    np.testing.assert_array_equal(seen_through(points, depth, K, 0.05), [True, False, False, False, False])
