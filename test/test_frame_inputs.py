"""
A frame's messages as the pipeline's arrays (mesc3d_ros/frame_inputs.py), the camera_info history and the log lines.

Plain messages, no ROS graph: each frame-level check names its cause, and a frame is dropped only when it cannot
be answered (unusable depth falls back to the size prior).
"""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from mesc3d_ros.conversions import (CameraIntrinsics, arrays_to_detections, intrinsics_to_camera_info,
                                    numpy_to_image)
from mesc3d_ros.diagnostics import CauseLog
from mesc3d_ros.frame_inputs import frame_inputs
from mesc3d_ros.frame_slot import BadCameraInfo, CameraInfoHistory, Frame

K = np.array([[500.0, 0.0, 32.0], [0.0, 500.0, 24.0], [0.0, 0.0, 1.0]])
CAMERA = CameraIntrinsics(K, width=64, height=48)


def make_frame(image_size=(48, 64), depth: Image | None = None, boxes=((10, 10, 30, 40),),
               camera_info=CAMERA) -> Frame:
    pixels = np.random.default_rng(0).integers(0, 256, (*image_size, 3), dtype=np.uint8)
    detections = arrays_to_detections(np.array(boxes, dtype=np.float64).reshape(-1, 4), ['mug'] * len(boxes),
                                      np.full(len(boxes), 0.9), Header())
    return Frame(numpy_to_image(pixels, 'rgb8'), detections, depth, camera_info, 0.0)


def test_a_good_frame_becomes_the_pipelines_arrays_with_depth_in_metres():
    depth_mm = np.full((48, 64), 750, dtype=np.uint16)
    depth_mm[0, 0] = 0  # a hole
    inputs, issues = frame_inputs(make_frame(depth=numpy_to_image(depth_mm, '16UC1')), depth_scale_m=0.001)
    assert issues == []
    assert inputs.rgb.shape == (48, 64, 3) and inputs.rgb.dtype == np.uint8
    assert inputs.intrinsics is CAMERA
    assert inputs.depth[1, 1] == pytest.approx(0.75, abs=1e-6) and inputs.depth[0, 0] == 0.0
    np.testing.assert_array_equal(inputs.detections.boxes, [[10, 10, 30, 40]])
    assert inputs.detections.class_ids == ['mug']


def test_frames_that_cannot_be_answered_are_dropped_naming_the_cause():
    for frame, cause in ((make_frame(camera_info=None), 'no_camera_info'),
                         (make_frame(camera_info=BadCameraInfo('k is singular')), 'no_camera_info'),
                         (make_frame(image_size=(24, 32)), 'size_mismatch')):
        inputs, issues = frame_inputs(frame, 0.001)
        assert inputs is None
        assert [(issue.cause, issue.detection_index) for issue in issues] == [(cause, -1)]
    broken = make_frame()
    broken.image.encoding = 'yuv422'
    inputs, issues = frame_inputs(broken, 0.001)
    assert inputs is None and [i.cause for i in issues] == ['bad_image'] and 'yuv422' in issues[0].detail


def test_unusable_depth_and_empty_detections_still_answer_the_frame():
    depth = numpy_to_image(np.zeros((48, 64), np.uint16), '16UC1')
    depth.encoding = 'rgb8'  # not a depth encoding
    inputs, issues = frame_inputs(make_frame(depth=depth), 0.001)
    assert inputs is not None and inputs.depth is None
    assert [i.cause for i in issues] == ['bad_depth']
    inputs, issues = frame_inputs(make_frame(boxes=()), 0.001)
    assert inputs is not None and inputs.detections.boxes.shape == (0, 4)
    assert [i.cause for i in issues] == ['empty_detections']


def test_camera_info_history_validates_on_arrival_and_a_bad_one_wins_its_stamp():
    history = CameraInfoHistory(size=4)
    assert history.add(100, intrinsics_to_camera_info(CAMERA)) is None
    bad = CameraInfo(width=64, height=48)  # all-zero K
    reason = history.add(200, bad)
    assert reason
    assert np.array_equal(history.match(150).k, K)  # the newest valid one stamped before
    assert isinstance(history.match(200), BadCameraInfo)  # that frame's own camera_info is unusable: skip it
    assert np.array_equal(history.match(300).k, K)  # later frames fall back to the newest valid one
    assert history.match(50) is None


def test_cause_log_lines_come_once_per_period_with_the_count_of_the_quiet_ones():
    log = CauseLog(period_s=60.0)
    first = log.line('bad_image', 'frame dropped: \x1b[31mred\x1b[0m', now_s=0.0)
    assert first.startswith('[bad_image] frame dropped:') and '\x1b' not in first
    assert log.line('bad_image', 'again', now_s=10.0) is None
    assert log.line('bad_image', 'again', now_s=20.0) is None
    assert log.line('no_camera_info', 'other cause', now_s=20.0) is not None  # causes are independent
    later = log.line('bad_image', 'again', now_s=61.0)
    assert '(2 more since the last report)' in later
    assert '(' not in log.line('bad_image', 'x', now_s=200.0).split(';')[0]
