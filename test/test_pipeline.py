"""
ReconstructionPipeline (mesc3d_ros/pipeline.py) end to end without ROS.

Real crops, the real ONNX Runtime backend on an oracle sphere model (test/sphere_model.py), real placement, against
analytically rendered spheres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mesc3d_ros import geometry
from mesc3d_ros.contract import load_contract
from mesc3d_ros.inference import create_backend
from mesc3d_ros.pipeline import PipelineSettings, ReconstructionPipeline
from mesc3d_ros.shape_fit import FitSettings
from mesc3d_ros.visible_surface import SurfaceSettings, seen_through, visible_surface
from sphere_model import class_entry, make_sphere_model
from test_shape_fit import frame_in_front_of_a_wall

WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
DIM = 4
BALL = class_entry('ball', y_stretch=1.0, size_m=0.2, dim=DIM)
EGG = class_entry('egg', y_stretch=0.5, size_m=0.3, dim=DIM)
GENERIC = class_entry('object', y_stretch=0.25, size_m=0.24, dim=DIM)

# (centre metres, radius metres) of the rendered spheres: one near the axis, one in the upper right.
SCENE = [(np.array([-0.05, 0.02, 1.0]), 0.1), (np.array([0.35, -0.2, 1.3]), 0.1)]


def render(spheres: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast spheres: (H, W, 3) uint8 RGB, (H, W) float32 z-depth metres (0 = background), (S, 4) xyxy boxes."""
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # (H, W, 3), z = 1
    depth = np.full((HEIGHT, WIDTH), np.inf)
    rgb = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    boxes = []
    for index, (centre, radius) in enumerate(spheres):
        a = np.einsum('hwk,hwk->hw', rays, rays)
        b = rays @ centre
        disc = b * b - a * (centre @ centre - radius * radius)
        hit = disc >= 0
        z = np.where(hit, (b - np.sqrt(np.where(hit, disc, 0.0))) / a, np.inf)
        nearer = z < depth
        depth[nearer] = z[nearer]
        rgb[nearer] = (200, 60 + 80 * index, 30)
        rows, cols = np.nonzero(hit)
        boxes.append([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
    depth[np.isinf(depth)] = 0.0
    return rgb, depth.astype(np.float32), np.array(boxes)


@pytest.fixture(scope='module')
def contract_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sphere_model(tmp_path_factory.mktemp('sphere'), classes=(BALL, EGG), generic=GENERIC)


@pytest.fixture(scope='module')
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return render(SCENE)


def make_pipeline(contract_path: Path, max_batch: int = 8, **settings) -> ReconstructionPipeline:
    """Build a pipeline for sphere scenes: the placement prior of a sphere (box fill and centre offset 1)."""
    backend = create_backend(contract_path, 'onnxruntime', max_batch=max_batch, threads=1)
    return ReconstructionPipeline(backend, load_contract(contract_path),
                                  PipelineSettings(prior=geometry.SPHERE, **settings))


def surface_error(points: np.ndarray, centre: np.ndarray, radius: float) -> float:
    """Largest distance (metres) of a point from the sphere's surface."""
    return float(np.abs(np.linalg.norm(points - centre, axis=1) - radius).max())


@pytest.mark.parametrize('depth_fit, mode', [(False, 'depth'), (True, 'fit')])
def test_spheres_are_placed_on_their_rendered_surfaces_with_depth(contract_path, scene, depth_fit, mode):
    rgb, depth, boxes = scene
    objects, issues = make_pipeline(contract_path, depth_fit=depth_fit).process(rgb, boxes, ['ball', 'ball'],
                                                                                np.array([0.9, 0.8]), K, depth)
    assert issues == []
    assert [o.detection_index for o in objects] == [0, 1]
    for obj, (centre, radius) in zip(objects, SCENE):
        distance = np.linalg.norm(centre)
        assert obj.placement.mode == mode
        if depth_fit:  # the fit recovers the pose from the measured surface: 1 cm, 5 % of the radius
            assert np.linalg.norm(obj.placement.centre - centre) < 0.01
            assert obj.placement.radius_m == pytest.approx(radius, rel=0.05)
            assert obj.fit_rms_m < 0.1 * radius and obj.visible_points >= 100
        assert obj.points.shape == (512, 3) and obj.points.dtype == np.float32
        assert np.linalg.norm(obj.placement.centre - centre) < 0.02 * distance
        assert surface_error(obj.points, centre, radius) < 0.02 * distance
        np.testing.assert_allclose(obj.points.mean(axis=0), obj.placement.centre, atol=1e-6)
        np.testing.assert_allclose(obj.box_size_m, 2 * radius, rtol=0.03)
        np.testing.assert_allclose(obj.box_centre, centre, atol=0.02 * distance)


def test_spheres_are_placed_from_the_size_prior_without_depth(contract_path, scene):
    rgb, _, boxes = scene
    objects, issues = make_pipeline(contract_path).process(rgb, boxes, ['ball', 'ball'], np.ones(2), K)
    assert issues == []
    for obj, (centre, radius) in zip(objects, SCENE):
        assert obj.placement.mode == 'size_prior'
        assert obj.placement.radius_m == pytest.approx(BALL.size_m / 2)
        assert np.linalg.norm(obj.placement.centre - centre) < 0.05 * np.linalg.norm(centre)


@pytest.mark.parametrize('fill', [np.nan, 0.0])
def test_invalid_depth_falls_back_to_the_size_prior_and_is_reported(contract_path, scene, fill):
    rgb, depth, boxes = scene
    holed = depth.copy()
    x0, y0, x1, y1 = boxes[1].astype(int)
    holed[y0:y1 + 1, x0:x1 + 1] = fill
    objects, issues = make_pipeline(contract_path).process(rgb, boxes, ['ball', 'ball'], np.ones(2), K, holed)
    assert [o.placement.mode for o in objects] == ['fit', 'size_prior']
    assert [(i.cause, i.detection_index) for i in issues] == [('fit_no_surface', 1), ('depth_invalid', 1)]
    centre = SCENE[1][0]
    assert np.linalg.norm(objects[1].placement.centre - centre) < 0.05 * np.linalg.norm(centre)


def test_fused_output_is_the_measured_front_plus_the_predicted_back(contract_path, scene):
    rgb, depth, boxes = scene
    fused, _ = make_pipeline(contract_path, output_cloud='fused').process(rgb, boxes, ['ball', 'ball'], np.ones(2),
                                                                          K, depth)
    for obj, (centre, radius) in zip(fused, SCENE):
        assert obj.placement.mode == 'fit' and obj.points.dtype == np.float32
        assert obj.points.shape[0] != 512  # measured points replace the predicted front
        # Every point is on the sphere: measured ones exactly (the render is noise-free), predicted ones as placed.
        assert surface_error(obj.points, centre, radius) < 0.01
        # Both sides are there: points nearer and farther than the centre.
        towards = (obj.points - centre) @ (centre / np.linalg.norm(centre)) / radius
        assert towards.min() < -0.9 and towards.max() > 0.9
        # The measured side is every reading of the box's visible surface, not the fit's sample of them, and not
        # cut by the residual to the fitted shape.
        assert np.sum(towards < -0.5) > SurfaceSettings().max_points
    for obj, box in zip(fused, boxes):
        measured = visible_surface(depth, K, box, geometry.DepthWindow(), geometry.PlacementPrior().box_fill,
                                   SurfaceSettings()).all_points
        np.testing.assert_array_equal(obj.points[:len(measured)], measured.astype(np.float32))


def test_fused_output_drops_predicted_points_the_camera_sees_past(contract_path, scene):
    """An egg-shaped prediction of a ball before a wall overhangs the ball's silhouette, where the wall is seen."""
    rgb, depth, boxes = scene
    depth = np.where(depth > 0, depth, 3.0).astype(np.float32)  # a wall 3 m away behind the balls
    for margin, overhang in ((1e9, True), (PipelineSettings().free_space_margin, False)):
        pipeline = make_pipeline(contract_path, output_cloud='fused', box_aspect_weight=0.0, free_space_margin=margin)
        objects, _ = pipeline.process(rgb, boxes, ['egg', 'egg'], np.ones(2), K, depth)
        assert [o.placement.mode for o in objects] == ['fit', 'fit']
        assert all(seen_through(o.points, depth, K, 0.05).any() == overhang for o in objects)


def test_placement_policy_size_prior_ignores_depth_and_depth_policy_reports_its_absence(contract_path, scene):
    rgb, depth, boxes = scene
    pipeline = make_pipeline(contract_path, placement='size_prior')
    objects, issues = pipeline.process(rgb, boxes, ['ball'] * 2, np.ones(2), K, depth)
    assert {o.placement.mode for o in objects} == {'size_prior'} and issues == []
    _, issues = make_pipeline(contract_path, placement='depth').process(rgb, boxes, ['ball'] * 2, np.ones(2), K)
    assert [(i.cause, i.detection_index) for i in issues] == [('depth_missing', -1)]


@pytest.mark.parametrize('weight, ratio', [(0.0, 0.5), (0.5, 0.5 ** 0.5), (1.0, 1.0)])
def test_shapes_take_their_box_proportions_by_box_aspect_weight(contract_path, scene, weight: float,
                                                                ratio: float) -> None:
    """The egg class predicts a shape half as tall as wide; the rendered balls' boxes are square."""
    rgb, depth, boxes = scene
    objects, _ = make_pipeline(contract_path, box_aspect_weight=weight).process(rgb, boxes, ['egg'] * 2, np.ones(2),
                                                                                K, depth)
    np.testing.assert_allclose([o.box_size_m[1] / o.box_size_m[0] for o in objects], ratio, rtol=0.05)


def test_a_ball_behind_a_nearer_one_is_fitted_to_its_own_surface(contract_path) -> None:
    """A small near ball hides the centre of a large far one: each is placed on its own surface (occluding_boxes)."""
    spheres = [(np.array([0.0, 0.0, 2.0]), 0.3), (np.array([0.0, 0.03, 1.0]), 0.06)]
    rgb, depth, boxes = render(spheres)
    objects, issues = make_pipeline(contract_path).process(rgb, boxes, ['ball'] * 2, np.ones(2), K, depth)
    assert [o.placement.mode for o in objects] == ['fit', 'fit'], issues
    for obj, (centre, radius) in zip(objects, spheres):
        assert np.linalg.norm(obj.placement.centre - centre) < 0.02 * centre[2], (obj.placement.centre, centre)


def test_class_map_zero_shot_and_skip(contract_path, scene):
    rgb, depth, boxes = scene
    four = np.concatenate([boxes, boxes])
    names = ['41', 'egg', 'teapot', 'ball']
    # The oracle's proportions are the test's signal: not moved towards the boxes'.
    pipeline = make_pipeline(contract_path, class_map={'41': 'egg'}, box_aspect_weight=0.0)
    objects, issues = pipeline.process(rgb, four, names, np.ones(4), K, depth)
    assert [(o.detector_class, o.model_class, o.zero_shot) for o in objects] == [
        ('41', 'egg', False), ('egg', 'egg', False), ('teapot', 'object', True), ('ball', 'ball', False)]
    # Each object got its own embedding through the batch: the oracle stretches y by the embedding's first value.
    ratios = [o.box_size_m[1] / o.box_size_m[0] for o in objects]
    np.testing.assert_allclose(ratios, [0.5, 0.5, 0.25, 1.0], rtol=0.05)
    assert [(i.cause, i.detection_index) for i in issues] == [('unknown_class', 2)]
    skipped, _ = make_pipeline(contract_path, unknown_class='skip').process(rgb, four, names, np.ones(4), K, depth)
    assert [o.detection_index for o in skipped] == [1, 3]


def test_batches_larger_than_max_batch_keep_their_order(contract_path, scene):
    rgb, depth, boxes = scene
    names = ['ball', 'egg', 'ball', 'egg', 'egg']
    five = np.concatenate([boxes, boxes, boxes[:1]])
    pipeline = make_pipeline(contract_path, max_batch=2, box_aspect_weight=0.0)  # the oracle's proportions
    objects, _ = pipeline.process(rgb, five, names, np.ones(5), K, depth)
    ratios = [o.box_size_m[1] / o.box_size_m[0] for o in objects]
    np.testing.assert_allclose(ratios, [1.0, 0.5, 1.0, 0.5, 0.5], rtol=0.05)


def test_min_score_filters_without_reporting(contract_path, scene):
    rgb, depth, boxes = scene
    objects, issues = make_pipeline(contract_path, min_score=0.5).process(rgb, boxes, ['ball'] * 2,
                                                                          np.array([0.4, 0.6]), K, depth)
    assert [o.detection_index for o in objects] == [1] and issues == []


def test_bad_boxes_are_skipped_or_clipped_and_reported(contract_path, scene):
    rgb, depth, boxes = scene
    bad = np.array([[700.0, 10.0, 760.0, 50.0],  # fully right of the image
                    [100.0, 100.0, 100.0, 180.0],  # zero width
                    [np.nan, 0.0, 10.0, 10.0],  # not finite
                    [600.0, -30.0, 700.0, 60.0]])  # partly outside: clipped, still reconstructed
    objects, issues = make_pipeline(contract_path).process(rgb, np.concatenate([bad, boxes]), ['ball'] * 6,
                                                           np.ones(6), K, depth)
    assert [(i.cause, i.detection_index) for i in issues] == [
        ('box_off_image', 0), ('box_degenerate', 1), ('box_degenerate', 2), ('box_clipped', 3),
        ('fit_no_surface', 3), ('depth_invalid', 3)]  # the clipped box holds only background: no depth in this render
    assert [o.detection_index for o in objects] == [3, 4, 5]
    # The good detections are unaffected by the bad ones in the same frame.
    for obj, (centre, radius) in zip(objects[1:], SCENE):
        assert surface_error(obj.points, centre, radius) < 0.02 * np.linalg.norm(centre)


def test_canonical_models_are_placed_by_centre_with_optical_axes(tmp_path, scene):
    path = make_sphere_model(tmp_path, classes=(BALL, EGG), generic=GENERIC, output_frame='canonical')
    rgb, depth, boxes = scene
    # The box + depth placement: an egg fitted to a rendered ball is a shape error, not what this test is about.
    objects, _ = make_pipeline(path, depth_fit=False).process(rgb, boxes, ['egg', 'egg'], np.ones(2), K, depth)
    for obj, (centre, _) in zip(objects, SCENE):
        np.testing.assert_array_equal(obj.placement.rotation, np.eye(3))
        assert np.linalg.norm(obj.placement.centre - centre) < 0.02 * np.linalg.norm(centre)


def test_limitations_name_a_canonical_frame_and_a_lowered_object_limit(tmp_path, contract_path):
    assert make_pipeline(contract_path, max_objects=4).limitations() == []
    too_many = 10**6  # far more clouds than a PointCloud2 of the transport's size holds
    pipeline = make_pipeline(contract_path, max_objects=too_many)
    assert pipeline.max_objects < too_many
    assert [note.split(':')[0] for note in pipeline.limitations()] == [
        f'max_objects {too_many} lowered to {pipeline.max_objects}']
    # A fused object can hold every reading of its box as well: fewer of them fit.
    assert make_pipeline(contract_path, max_objects=too_many, output_cloud='fused').max_objects < pipeline.max_objects
    canonical = make_sphere_model(tmp_path, classes=(BALL, EGG), generic=GENERIC, output_frame='canonical')
    assert 'canonical object frame' in make_pipeline(canonical).limitations()[0]


def test_crop_padding_defaults_to_the_contract_and_can_be_overridden(contract_path):
    assert make_pipeline(contract_path).padding == pytest.approx(0.1)
    assert make_pipeline(contract_path, crop_padding=0.3).padding == pytest.approx(0.3)


def test_empty_frame_gives_no_objects(contract_path, scene):
    rgb, depth, _ = scene
    assert make_pipeline(contract_path).process(rgb, np.zeros((0, 4)), [], np.zeros(0), K, depth) == ([], [])


def test_depth_of_another_size_is_ignored_and_reported_once_for_the_frame(contract_path, scene):
    rgb, depth, boxes = scene
    objects, issues = make_pipeline(contract_path).process(rgb, boxes, ['ball'] * 2, np.ones(2), K, depth[::2, ::2])
    assert [(i.cause, i.detection_index) for i in issues] == [('depth_size_mismatch', -1)]
    assert 'depth is 320x240, image 640x480' in issues[0].detail
    assert [o.placement.mode for o in objects] == ['size_prior', 'size_prior']


def test_inconsistent_inputs_raise_naming_the_sizes(contract_path, scene):
    rgb, depth, boxes = scene
    pipeline = make_pipeline(contract_path)
    with pytest.raises(ValueError, match='2 class names'):
        pipeline.process(rgb, boxes, ['ball'] * 2, np.ones(3), K)
    with pytest.raises(ValueError, match='teapot'):
        make_pipeline(contract_path, class_map={'7': 'teapot'})


def test_a_rejected_fit_places_the_object_at_its_visible_front_not_at_the_background(contract_path):
    """A frame before a wall, the fit forced to fail: the box placement starts at the frame, not the wall behind."""
    depth, box = frame_in_front_of_a_wall(1.2, 2.0)
    rgb = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    rgb[depth < 1.5] = (200, 60, 30)
    pipeline = make_pipeline(contract_path, fit=FitSettings(max_rms_fraction=0.0))  # every fit is poor
    objects, issues = pipeline.process(rgb, box[None], ['ball'], np.ones(1), K, depth)
    assert [i.cause for i in issues] == ['fit_rejected'] and objects[0].placement.mode == 'depth'
    # The sphere prior puts the centre one box radius (0.16 m at 1.2 m) behind the front: 1.36 m, not 2.2 m.
    assert objects[0].placement.centre[2] == pytest.approx(1.2 + 70 * 1.2 / 525, abs=0.03)
