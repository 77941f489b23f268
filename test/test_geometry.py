"""Placement maths (mesc3d_ros/geometry.py) against analytic renders of a sphere with known K, pose and depth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesc3d_ros import geometry

WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


def render_sphere(centre: np.ndarray, radius: float, K: np.ndarray = K) -> tuple[np.ndarray, np.ndarray]:
    """
    Ray-cast a sphere: (H, W) float32 z-depth in metres (0 = background) and its tight box (x0, y0, x1, y1).

    Box edges are the outer edges of the outermost mask pixels (pixel centres are integers), as a mask-derived
    ground-truth box is.
    """
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # (H, W, 3), z = 1
    # |t·d − c|² = r²  →  t² d·d − 2 t d·c + c·c − r² = 0; the smaller root is the visible surface; z-depth = t.
    a = np.einsum('hwk,hwk->hw', rays, rays)
    b = rays @ centre
    disc = b * b - a * (centre @ centre - radius * radius)
    hit = disc >= 0
    depth = np.where(hit, (b - np.sqrt(np.where(hit, disc, 0.0))) / a, 0.0).astype(np.float32)
    rows, cols = np.nonzero(hit)
    box = np.array([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
    return depth, box


def sphere_points(count: int = 2000, seed: int = 0) -> np.ndarray:
    """(count, 3) points on the unit sphere."""
    points = np.random.default_rng(seed).normal(size=(count, 3))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def project(K: np.ndarray, point: np.ndarray) -> np.ndarray:
    pixel = K @ point
    return pixel[:2] / pixel[2]


# ---- rotation ----------------------------------------------------------------------------------------------------
pixels = st.tuples(st.floats(-200.0, 840.0), st.floats(-200.0, 680.0))
intrinsics = st.tuples(st.floats(200.0, 1500.0), st.floats(200.0, 1500.0), st.floats(100.0, 500.0),
                       st.floats(100.0, 400.0))


@given(pixel=pixels, k=intrinsics)
@settings(max_examples=200, deadline=None)
def test_rotation_maps_optical_axis_to_pixel_ray_with_documented_roll(pixel, k):
    fx, fy, cx, cy = k
    intr = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    R = geometry.virtual_camera_rotation(intr, *pixel)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    ray = np.linalg.solve(intr, [pixel[0], pixel[1], 1.0])
    np.testing.assert_allclose(R @ [0.0, 0.0, 1.0], ray / np.linalg.norm(ray), atol=1e-12)
    # The roll: virtual x lies in span(real x, ray) and points the same way as real x.
    assert R[:, 0] @ np.cross([1.0, 0.0, 0.0], R[:, 2]) == pytest.approx(0.0, abs=1e-12)
    assert R[0, 0] > 0
    # And the ray projects back onto the pixel.
    np.testing.assert_allclose(project(intr, R[:, 2]), pixel, atol=1e-6)


def test_box_views_of_a_batch_are_each_box_alone():
    boxes = np.array([[10.0, 20.0, 110.0, 90.0], [500.0, 20.0, 610.0, 90.0], [300.0, 200.0, 340.0, 400.0]])
    views = geometry.box_views(K, boxes)
    assert len(views) == 3
    for box, view in zip(boxes, views):
        alone = geometry.box_view(K, box)
        np.testing.assert_array_equal(view.ray, alone.ray)
        np.testing.assert_array_equal(view.rotation, alone.rotation)
        assert view.half_extents == alone.half_extents
        np.testing.assert_allclose(view.rotation[:, 2], view.ray)
        np.testing.assert_allclose(project(K, view.ray), [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], atol=1e-9)
    with pytest.raises(np.linalg.LinAlgError):
        geometry.box_views(np.zeros((3, 3)), boxes)


def test_rotation_is_identity_on_the_principal_point():
    np.testing.assert_allclose(geometry.virtual_camera_rotation(K, K[0, 2], K[1, 2]), np.eye(3), atol=1e-15)


# ---- distances ---------------------------------------------------------------------------------------------------
def test_size_prior_distance_is_the_pinhole_formula_at_small_angles():
    box_px = 70.0
    box = np.array([K[0, 2] - box_px / 2, K[1, 2] - 20.0, K[0, 2] + box_px / 2, K[1, 2] + 20.0])
    half_angle = geometry.box_view(K, box).half_angle
    assert np.tan(half_angle) == pytest.approx(box_px / 2 / K[0, 0])
    distance = geometry.distance_from_size_prior(0.3, half_angle, geometry.SPHERE)
    assert 0.15 / distance == pytest.approx(np.sin(half_angle))
    assert distance == pytest.approx(K[0, 0] * 0.3 / box_px, rel=0.005)
    # A box covering κ of the bounding sphere's silhouette: the object is κ times nearer.
    prior = geometry.PlacementPrior(box_fill=0.8, centre_offset=0.4)
    assert geometry.distance_from_size_prior(0.3, half_angle, prior) == pytest.approx(0.8 * distance)


@pytest.mark.parametrize('centre_offset', [1.0, 0.35])
def test_depth_distance_puts_the_centroid_behind_the_surface_by_the_offset(centre_offset):
    half_angle = np.deg2rad(12.0)
    prior = geometry.PlacementPrior(box_fill=0.8, centre_offset=centre_offset)
    distance = geometry.distance_from_surface(0.8, half_angle, prior)
    assert distance - 0.8 == pytest.approx(centre_offset * distance * np.sin(half_angle))


def test_distances_reject_impossible_inputs():
    with pytest.raises(ValueError, match='half_angle'):
        geometry.distance_from_surface(1.0, 2.0, geometry.SPHERE)
    with pytest.raises(ValueError, match='size_m'):
        geometry.distance_from_size_prior(0.0, 0.1, geometry.SPHERE)


SPHERES = [  # (centre metres, radius metres): on axis, off axis, near the image corner, close to the camera
    (np.array([0.0, 0.0, 1.0]), 0.1),
    (np.array([0.25, -0.12, 1.4]), 0.12),
    (np.array([-0.45, 0.3, 1.1]), 0.08),
    (np.array([0.05, 0.04, 0.45]), 0.1),
]


@pytest.mark.parametrize(('centre', 'radius'), SPHERES)
def test_sphere_is_placed_from_depth_within_two_percent(centre, radius):
    depth, box = render_sphere(centre, radius)
    surface = geometry.surface_distance(depth, box, geometry.box_view(K, box), geometry.DepthWindow())
    placement = geometry.place(geometry.box_view(K, box), size_m=9.9, surface_m=surface, orientation_known=True,
                               prior=geometry.SPHERE)
    distance = np.linalg.norm(centre)
    assert placement.mode == 'depth'
    assert np.linalg.norm(placement.centre - centre) < 0.02 * distance
    assert placement.radius_m == pytest.approx(radius, rel=0.06)
    # The whole placed unit sphere lies on the rendered sphere's surface, to a few millimetres.
    points = placement.transform(sphere_points())
    assert points.dtype == np.float32 and points.shape == (2000, 3)
    assert np.abs(np.linalg.norm(points - centre, axis=1) - radius).max() < 0.02 * distance


@pytest.mark.parametrize(('centre', 'radius'), SPHERES)
def test_sphere_is_placed_from_size_prior_within_three_percent(centre, radius):
    _, box = render_sphere(centre, radius)
    placement = geometry.place(geometry.box_view(K, box), size_m=2 * radius, surface_m=None,
                               orientation_known=True, prior=geometry.SPHERE)
    assert placement.mode == 'size_prior'
    assert placement.radius_m == pytest.approx(radius)
    assert np.linalg.norm(placement.centre - centre) < 0.03 * np.linalg.norm(centre)


def test_placed_centre_projects_onto_the_box_centre():
    box = np.array([500.0, 20.0, 610.0, 90.0])
    placement = geometry.place(geometry.box_view(K, box), size_m=0.2, surface_m=None, orientation_known=True,
                               prior=geometry.PlacementPrior())
    np.testing.assert_allclose(project(K, placement.centre), [555.0, 55.0], atol=1e-9)


def test_canonical_models_keep_the_optical_axes():
    box = np.array([500.0, 20.0, 610.0, 90.0])
    placement = geometry.place(geometry.box_view(K, box), size_m=0.2, surface_m=None, orientation_known=False,
                               prior=geometry.PlacementPrior())
    np.testing.assert_array_equal(placement.rotation, np.eye(3))
    np.testing.assert_allclose(project(K, placement.centre), [555.0, 55.0], atol=1e-9)


# ---- depth statistics --------------------------------------------------------------------------------------------
def test_surface_distance_ignores_nan_zero_and_out_of_range_pixels():
    depth, box = render_sphere(np.array([0.0, 0.0, 1.0]), 0.1)
    clean = geometry.surface_distance(depth, box, geometry.box_view(K, box), geometry.DepthWindow())
    noisy = depth.copy()
    rows, cols = np.nonzero(depth)
    noisy[rows[::3], cols[::3]] = np.nan
    noisy[rows[1::7], cols[1::7]] = 0.0
    noisy[rows[2::11], cols[2::11]] = 500.0
    noisy_distance = geometry.surface_distance(noisy, box, geometry.box_view(K, box), geometry.DepthWindow())
    assert noisy_distance == pytest.approx(clean, rel=0.01)


@pytest.mark.parametrize('fill', [np.nan, 0.0, np.inf])
def test_surface_distance_is_none_without_valid_depth(fill):
    depth, box = render_sphere(np.array([0.0, 0.0, 1.0]), 0.1)
    depth[:] = fill
    assert geometry.surface_distance(depth, box, geometry.box_view(K, box), geometry.DepthWindow()) is None


def test_surface_distance_is_none_when_mostly_holes():
    depth, box = render_sphere(np.array([0.0, 0.0, 1.0]), 0.1)
    rows, cols = np.nonzero(depth)
    keep = np.zeros(rows.size, dtype=bool)
    keep[::50] = True  # 2 % of the pixels survive
    depth[rows[~keep], cols[~keep]] = 0.0
    window = geometry.DepthWindow(min_valid_fraction=0.1)
    assert geometry.surface_distance(depth, box, geometry.box_view(K, box), window) is None


# ---- shape normalisation -----------------------------------------------------------------------------------------
@given(scale=st.floats(1e-3, 1e3), offset=st.tuples(*[st.floats(-50.0, 50.0)] * 3))
@settings(max_examples=50, deadline=None)
def test_normalise_shape_is_the_unit_ball_normalisation_and_ignores_offset_and_scale(scale, offset):
    shape = np.random.default_rng(1).uniform(-1.0, 1.0, size=(256, 3)) * [1.0, 0.5, 0.2]
    unit = geometry.normalise_shape(shape)
    np.testing.assert_allclose(geometry.normalise_shape(shape * scale + np.array(offset)), unit, atol=1e-6)
    assert np.linalg.norm(unit, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(unit.mean(axis=0), 0.0, atol=1e-12)


def test_normalise_shape_of_a_single_repeated_point_is_zero():
    np.testing.assert_array_equal(geometry.normalise_shape(np.full((10, 3), 0.3)), 0.0)


# ---- quaternions -------------------------------------------------------------------------------------------------
def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """Return the textbook (x, y, z, w) -> matrix formula, written independently of the code under test."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@given(q=st.tuples(*[st.floats(-1.0, 1.0)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1))
@settings(max_examples=300, deadline=None)
def test_rotation_to_quaternion_round_trips(q):
    q = np.array(q) / np.linalg.norm(q)
    q = q if q[3] >= 0 else -q
    result = geometry.rotation_to_quaternion(quaternion_to_rotation(q))
    assert np.linalg.norm(result) == pytest.approx(1.0)
    # q and -q are the same rotation; at w = 0 either sign is correct.
    assert min(np.abs(result - q).max(), np.abs(result + q).max()) < 1e-9


@pytest.mark.parametrize('angle', [0.0, np.pi / 2, np.pi, 3.0])
def test_rotation_to_quaternion_of_axis_rotations(angle):
    for axis in np.eye(3):
        q = np.concatenate([axis * np.sin(angle / 2), [np.cos(angle / 2)]])
        result = geometry.rotation_to_quaternion(quaternion_to_rotation(q))
        assert min(np.abs(result - q).max(), np.abs(result + q).max()) < 1e-12


def test_match_box_aspect_moves_the_silhouette_proportions_towards_the_box() -> None:
    """A shape twice as wide as tall in a square box: halfway (weight 0.5) in log ratio, all the way at 1, bounded."""
    rng = np.random.default_rng(0)
    shape = geometry.normalise_shape(rng.uniform(-1, 1, (500, 3)) * [2.0, 1.0, 1.5])
    aspect = lambda points: np.ptp(points[:, 0]) / np.ptp(points[:, 1])  # noqa: E731

    def matched(box_half_extents, weight):  # one shape, one box
        return geometry.match_box_aspect(shape[None], np.array([box_half_extents]), weight)[0]

    before = aspect(shape)
    units = shape[None]
    assert geometry.match_box_aspect(units, np.array([[0.1, 0.1]]), 0.0) is units
    assert aspect(matched((0.1, 0.1), 1.0)) == pytest.approx(1.0)
    assert aspect(matched((0.1, 0.1), 0.5)) == pytest.approx(before ** 0.5)
    bounded = matched((0.1, 1.0), 1.0)  # a box 10 x taller than wide: 1.5² at most
    assert aspect(bounded) == pytest.approx(before / geometry.MAX_ASPECT_STRETCH ** 2)
    stretched = matched((0.1, 0.1), 1.0)
    assert np.linalg.norm(stretched, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(stretched.mean(axis=0), 0.0, atol=1e-12)
    # A batch is each shape matched to its own box; a shape without height (a flat line) and a box without width
    # are left as they are.
    flat = geometry.normalise_shape(np.stack([np.linspace(-1, 1, 500), np.zeros(500), np.zeros(500)], axis=1))
    batch = geometry.match_box_aspect(np.stack([shape, flat, shape]), np.array([[0.1, 0.1], [0.1, 0.1], [0.0, 0.1]]),
                                      1.0)
    np.testing.assert_allclose(batch[0], stretched)
    np.testing.assert_array_equal(batch[1], flat)
    np.testing.assert_array_equal(batch[2], shape)


def test_normalise_shape_normalises_each_shape_of_a_batch_alone() -> None:
    rng = np.random.default_rng(1)
    shapes = rng.normal(size=(3, 200, 3)) * [[[1.0]], [[5.0]], [[0.0]]] + 7.0  # the last: all points equal
    units = geometry.normalise_shape(shapes)
    for shape, unit in zip(shapes, units):
        np.testing.assert_array_equal(unit, geometry.normalise_shape(shape))
    np.testing.assert_array_equal(units[2], 0.0)
    assert np.isnan(geometry.normalise_shape(np.full((1, 10, 3), np.nan))).all()  # for the output guard to reject
