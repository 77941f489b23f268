"""
The demo's scenes and publisher without a ROS graph.

Which objects play, and that the ground truth matches the renders and the messages of a frame.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mesc3d_ros.package_share import DEFAULT_MODEL, resolve_model
from mesc3d_ros.ros_env import REPO_ROOT
from mesc3d_training.data.categories import SplitMember, assign_splits
from mesc3d_training.data.sources import list_sources, mesh_digests
from mesc3d_training.demo.publisher import demo_categories, load_demo_objects, sources_in_split
from mesc3d_training.demo.scenes import SceneSettings, load_sequence, render_sequence, save_sequence


@pytest.mark.parametrize('split', ['test', 'val'])
def test_played_objects_are_of_one_split_only(split: str):
    """``make demo`` plays test objects; scripts/shape_fit_tuning.py chooses the fit's settings on val objects."""
    categories = {'mug', 'bottle', 'chair'}
    sources = [s for s in list_sources(('sh3d', 'pybullet'))[0] if s.category in categories]
    digests = mesh_digests(sources)
    assigned = assign_splits(SplitMember(s.object_id, s.category, digests[s.object_id]) for s in sources)
    played = sources_in_split(categories, split)
    assert played and all(assigned[s.object_id] == split for s in played)
    assert {s.object_id for s in played} == {i for i, name in assigned.items() if name == split}


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    pool = load_demo_objects({'mug', 'bottle', 'bowl'}, count=3, seed=0)
    rendered = render_sequence(pool, SceneSettings(min_objects=2, max_objects=2, seed=1), num_scenes=2, rate_hz=15,
                               frames_per_scene=4, num_frames=8)
    return load_sequence(save_sequence(rendered, tmp_path_factory.mktemp('scenes') / 'scenes.npz'))


def test_ground_truth_projects_onto_its_object_and_depth(sequence):
    for scene in sequence.scenes:
        assert scene.objects and scene.rgb.shape == (480, 640, 3) and scene.depth_mm.dtype == np.uint16
        for label, truth in enumerate(scene.objects, start=1):
            pixels = truth.points_cam @ sequence.K.T  # (M, 3) homogeneous
            uv = np.round(pixels[:, :2] / pixels[:, 2:]).astype(int)
            on_object = scene.labels[uv[:, 1], uv[:, 0]] == label
            # Hidden sides project inside the silhouette too, unless another object covers them.
            assert on_object.mean() > 0.8 * truth.visible_fraction
            # Points on the visible front surface have the rendered depth (mm quantisation, sampling spacing).
            depth_m = scene.depth_mm[uv[:, 1], uv[:, 0]] / 1000.0
            front = on_object & (np.abs(depth_m - pixels[:, 2]) < 0.01)
            assert front.mean() > 0.2
            assert np.median(np.abs(depth_m - pixels[:, 2])[front]) < 0.003
            x0, y0, x1, y1 = truth.box_xyxy
            assert (uv[on_object, 0] >= x0 - 1).all() and (uv[on_object, 0] <= x1).all()


def test_a_frame_plays_its_scene_with_the_ground_truth_detections(sequence):
    from std_msgs.msg import Header

    from mesc3d_ros.conversions import camera_info_to_intrinsics, detections_to_arrays, image_to_numpy
    from mesc3d_training.demo.publisher import frame_messages

    image, depth, info, detections = frame_messages(sequence, 5, Header(frame_id='cam'))
    scene = sequence.scenes[sequence.scene_index(5)]
    assert sequence.scene_index(5) == 1
    np.testing.assert_array_equal(image_to_numpy(image), scene.rgb)
    np.testing.assert_array_equal(image_to_numpy(depth), scene.depth_mm)
    np.testing.assert_array_equal(camera_info_to_intrinsics(info).k, sequence.K)
    arrays = detections_to_arrays(detections)
    np.testing.assert_allclose(arrays.boxes, [truth.box_xyxy for truth in scene.objects])
    assert arrays.class_ids == [truth.category for truth in scene.objects]
    assert arrays.ids == [truth.object_id for truth in scene.objects]


def test_fit_tuning_runs_the_pipeline_on_validation_scenes(tmp_path):
    """scripts/shape_fit_tuning.py: renders val scenes once, then scores the defaults and each variant on them."""
    scenes = tmp_path / 'val_scenes.npz'
    command = [sys.executable, str(REPO_ROOT / 'scripts' / 'shape_fit_tuning.py'), '--objects', '3', '--scenes', '2',
               '--scenes-file', str(scenes), '--variant', '{"fit": {"trim_fraction": 0.7}}',
               '--variant', '{"box_aspect_weight": 0.0}']
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [line for line in result.stderr.splitlines() if line.startswith('{')]
    assert [line.split(': all')[0] for line in summaries] == [
        '{}', '{"fit": {"trim_fraction": 0.7}}', '{"box_aspect_weight": 0.0}']
    assert all('all centroid' in line for line in summaries)
    played = {truth.object_id for scene in load_sequence(scenes).scenes for truth in scene.objects}
    validation = {source.object_id for source in sources_in_split(demo_categories(resolve_model(DEFAULT_MODEL)), 'val')}
    assert played and played <= validation
