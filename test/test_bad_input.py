"""
Bad input never becomes bad output (issue 17), at the pipeline.

The real ONNX Runtime backend on the oracle sphere model, real crops and real placement, fed the attack classes of the
issue (extreme intrinsics, depth edge cases, junk scores, too many boxes, wild boxes and class ids), one by one and
then fuzzed together by hypothesis.

Whatever comes in, the pipeline must not raise, must not let numpy warnings out, and every object it returns must be
publishable: finite, in front of the camera, at most 10 m across and 1 km away. The node-level counterpart (DDS,
logs, the next good frame) is test_node.py's bad-input test and the reliability benchmark.
"""

from __future__ import annotations

import typing
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesc3d_ros import geometry, output_guard
from mesc3d_ros.contract import load_contract
from mesc3d_ros.inference import create_backend
from mesc3d_ros.pipeline import Issue, IssueCause, ObjectCloud, PipelineSettings, ReconstructionPipeline
from sphere_model import class_entry, make_sphere_model

WIDTH, HEIGHT = 64, 48
K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])
BALL = class_entry('ball', y_stretch=1.0, size_m=0.2, dim=4)
GENERIC = class_entry('object', y_stretch=0.25, size_m=0.24, dim=4)
BOX = np.array([[20.0, 12.0, 44.0, 36.0]])  # a 24-px box near the image centre
CAUSES = set(typing.get_args(IssueCause))


@pytest.fixture(scope='module')
def contract_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sphere_model(tmp_path_factory.mktemp('sphere'), classes=(BALL,), generic=GENERIC, num_points=256)


@pytest.fixture(scope='module')
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def make_pipeline(contract_path: Path, **settings) -> ReconstructionPipeline:
    backend = create_backend(contract_path, 'onnxruntime', max_batch=8, threads=1)
    return ReconstructionPipeline(backend, load_contract(contract_path), PipelineSettings(**settings))


def run(pipeline: ReconstructionPipeline, rgb: np.ndarray, boxes: np.ndarray, classes: list[str], scores, k=K,
        depth=None) -> tuple[list[ObjectCloud], list[Issue]]:
    """process() with every warning turned into an error: none may reach stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        return pipeline.process(rgb, np.asarray(boxes, dtype=np.float64), classes, np.asarray(scores, dtype=np.float64),
                                k, depth)


def assert_publishable(objects: list[ObjectCloud]) -> None:
    for obj in objects:
        assert np.isfinite(obj.points).all() and np.isfinite(obj.box_size_m).all()
        assert obj.points[:, 2].min() >= output_guard.MIN_Z_M
        assert obj.box_size_m.max() <= output_guard.MAX_OBJECT_SIZE_M
        assert np.linalg.norm(obj.placement.centre) <= output_guard.MAX_DISTANCE_M
        assert 0.0 <= obj.score <= 1.0


@pytest.mark.parametrize('score', [np.nan, np.inf, -np.inf, 7.5, -0.1])
def test_scores_that_are_no_probability_are_dropped_as_bad_score(contract_path, rgb, score):
    objects, issues = run(make_pipeline(contract_path, min_score=0.5), rgb, np.repeat(BOX, 2, axis=0),
                          ['ball', 'ball'], [score, 0.9])
    assert [o.detection_index for o in objects] == [1]
    assert [(i.cause, i.detection_index) for i in issues] == [('bad_score', 0)]


def test_at_most_max_objects_highest_scores_first_rest_counted(contract_path, rgb):
    scores = np.array([0.1, 0.9, 0.5, 0.95, 0.2])
    objects, issues = run(make_pipeline(contract_path, max_objects=2), rgb, np.repeat(BOX, 5, axis=0),
                          ['ball'] * 5, scores)
    assert [o.detection_index for o in objects] == [1, 3]  # the two best, in input order
    assert sorted((i.cause, i.detection_index) for i in issues) == [('too_many_objects', i) for i in (0, 2, 4)]


def test_max_objects_is_lowered_until_the_cloud_fits_the_transport(contract_path):
    pipeline = make_pipeline(contract_path, max_objects=100_000)
    assert pipeline.max_objects * 256 * output_guard.CLOUD_POINT_BYTES <= output_guard.MAX_CLOUD_BYTES


@pytest.mark.parametrize('reading', [0.0, 1e-45, 1e-4, -1.0, np.inf, np.nan])
def test_zero_and_sub_millimetre_depth_is_no_reading_even_with_min_depth_0(contract_path, rgb, reading):
    window = geometry.DepthWindow(min_depth_m=0.0)
    depth = np.full((HEIGHT, WIDTH), reading, dtype=np.float32)
    objects, issues = run(make_pipeline(contract_path, depth=window), rgb, BOX, ['ball'], [0.9], depth=depth)
    # No surface to fit the shape to, then no median depth: the frame is answered from the size prior.
    assert [i.cause for i in issues] == ['fit_no_surface', 'depth_invalid']
    assert [o.placement.mode for o in objects] == ['size_prior']
    assert_publishable(objects)


@pytest.mark.parametrize('k', [
    [[1e-12, 0, 31.5], [0, 1e-12, 23.5], [0, 0, 1]],  # points 1e14 m away, z < 0
    [[1e300, 0, 31.5], [0, 1e300, 23.5], [0, 0, 1]],  # overflows to inf
    [[5e-324, 0, 31.5], [0, 60, 23.5], [0, 0, 1]],  # raised in the geometry before
    [[60, 0, 1e300], [0, 60, 23.5], [0, 0, 1]],
    [[60, 1e300, 31.5], [0, 60, 23.5], [0, 0, 1]],
    [[60, 0, -1e5], [0, 60, 23.5], [0, 0, 1]],  # a kilometre to the side
    [[0, 0, 0], [0, 0, 0], [0, 0, 0]],  # singular
    [[np.nan, 0, 31.5], [0, 60, 23.5], [0, 0, 1]],
])
def test_intrinsics_the_node_would_refuse_never_raise_or_publish_garbage(contract_path, rgb, k):
    # The node refuses these already (intrinsics_check); the pipeline must still hold on its own.
    depth = np.full((HEIGHT, WIDTH), 1.0, dtype=np.float32)
    for frame_depth in (None, depth):
        objects, issues = run(make_pipeline(contract_path), rgb, BOX, ['ball'], [0.9], k=np.array(k, float),
                              depth=frame_depth)
        assert_publishable(objects)
        assert objects or issues, 'a dropped object must be reported'


@pytest.mark.parametrize('k', [
    [[0, 0, 0], [0, 0, 0], [0, 0, 0]],  # singular
    [[np.nan, 0, 31.5], [0, 60, 23.5], [0, 0, 1]],  # not finite
    [[60, 0, 1e300], [0, 60, 23.5], [0, 0, 1]],  # every ray at 90° to the optical axis
    [[60, 0, 31.5], [0, 60, 23.5], [0, 0, -1]],  # every ray behind the camera
])
def test_intrinsics_no_ray_can_use_fail_the_whole_frame_before_inference(contract_path, rgb, k):
    class CountingBackend:
        def __init__(self, backend):
            self.backend, self.calls = backend, 0

        def run(self, image, embedding):
            self.calls += 1
            return self.backend.run(image, embedding)

    backend = CountingBackend(create_backend(contract_path, 'onnxruntime', max_batch=8, threads=1))
    pipeline = ReconstructionPipeline(backend, load_contract(contract_path), PipelineSettings())
    boxes = np.concatenate([BOX, BOX + 4])
    objects, issues = run(pipeline, rgb, boxes, ['ball', 'ball'], [0.9, 0.8], k=np.array(k, float))
    assert objects == [] and backend.calls == 0
    assert [(i.cause, i.detection_index) for i in issues] == [('placement_failed', 0), ('placement_failed', 1)]


# ---- fuzz ---------------------------------------------------------------------------------------------------------
WILD = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-200, 200),
                 st.sampled_from([0.0, -1.0, 1e-45, 1e-300, 1e308, float('nan'), float('inf')]))
PIXEL = st.one_of(st.floats(-20, 84), WILD)


@st.composite
def frames(draw):
    count = draw(st.integers(0, 40))
    boxes = np.array([[draw(PIXEL) for _ in range(4)] for _ in range(count)], dtype=np.float64).reshape(count, 4)
    # Mostly sorted corners, so that many boxes reach inference and placement rather than being degenerate.
    if draw(st.booleans()):
        boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1)
    classes = [draw(st.one_of(st.just('ball'), st.text(max_size=20), st.just('x' * 100_000))) for _ in range(count)]
    scores = np.array([draw(st.one_of(st.floats(0, 1), WILD)) for _ in range(count)], dtype=np.float64)
    good = draw(st.integers(0, 20))  # plus valid boxes, so that the cap on objects is reached too
    boxes = np.concatenate([boxes, np.repeat(BOX, good, axis=0)])
    classes += ['ball'] * good
    scores = np.concatenate([scores, np.full(good, 0.5)])
    k = np.array(K)
    if draw(st.booleans()):
        for row, col in draw(st.lists(st.sampled_from([(0, 0), (1, 1), (0, 2), (1, 2), (0, 1)]), max_size=3)):
            k[row, col] = draw(WILD)
    depth = draw(st.one_of(st.none(), st.sampled_from([0.0, 1e-45, 1e-4, 0.5, 3.0, 1e30, np.inf, np.nan, -2.0])))
    if depth is not None:
        depth = np.full((HEIGHT, WIDTH), depth, dtype=np.float32)
        with np.errstate(over='ignore'):  # a float64 beyond float32 becomes inf, as a message would hold
            depth[draw(st.integers(0, HEIGHT)):, :draw(st.integers(0, WIDTH))] = draw(WILD)
    return boxes, classes, scores, k, depth


@pytest.mark.slow
def test_fuzzed_frames_never_raise_and_never_publish_impossible_objects(contract_path, rgb):
    pipeline = make_pipeline(contract_path, max_objects=8, depth=geometry.DepthWindow(min_depth_m=0.0))
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(frame=frames())
    def check(frame) -> None:
        boxes, classes, scores, k, depth = frame
        objects, issues = run(pipeline, rgb, boxes, classes, scores, k=k, depth=depth)
        assert len(objects) <= 8
        assert_publishable(objects)
        assert {i.cause for i in issues} <= CAUSES
        assert all(len(i.detail) < 1000 for i in issues), 'issue details must stay bounded'
        seen.update(i.cause for i in issues)

    check()
    # The fuzz reached the checks it is meant to exercise.
    assert {'bad_score', 'box_degenerate', 'too_many_objects', 'depth_invalid'} <= seen, seen
