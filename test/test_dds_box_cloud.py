"""
Two real processes over loopback DDS: this test publishes, ``box_cloud_node`` (its console script) answers.

The expected cloud is computed here from the pinhole formula, independently of the node's code, and compared byte
for byte with what arrives over DDS.
"""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from mesc3d_ros.conversions import (CameraIntrinsics, arrays_to_detections, intrinsics_to_camera_info,
                                    numpy_to_image, points_to_cloud)
from ros_helpers import spin_until, start_process, venv_script

pytestmark = pytest.mark.ros

NAMESPACE = '/box_cloud_test'
FX, FY, CX, CY = 400.0, 420.0, 160.0, 120.0
WIDTH, HEIGHT = 320, 240
BOXES = np.array([[10.0, 20.0, 110.0, 90.0],  # (K, 4) xyxy pixels
                  [150.5, 60.25, 300.0, 230.0]])
DEPTH_M = 3.25  # not the node's default (2.0), so the -p override is what the test sees


def expected_corners(boxes: np.ndarray, depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(4K, 3) float32 metres and (4K,) uint32 ids: corners (x0,y0), (x1,y0), (x1,y1), (x0,y1) of each box."""
    points, ids = [], []
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        for u, v in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
            points.append(((u - CX) / FX * depth_m, (v - CY) / FY * depth_m, depth_m))
            ids.append(index)
    return np.array(points, dtype=np.float32), np.array(ids, dtype=np.uint32)


def test_box_cloud_node_answers_over_dds_byte_for_byte(ros_node):
    header = Header(stamp=Time(sec=1234, nanosec=567_000_000), frame_id='camera_optical')
    image = numpy_to_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), 'rgb8', header)
    detections = arrays_to_detections(BOXES, ['cup', 'bowl'], np.array([0.9, 0.8]), header)
    k = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]])
    camera_info = intrinsics_to_camera_info(CameraIntrinsics(k=k, width=WIDTH, height=HEIGHT), header)

    publishers = [(ros_node.create_publisher(CameraInfo, f'{NAMESPACE}/camera_info', 10), camera_info),
                  (ros_node.create_publisher(Image, f'{NAMESPACE}/image', 10), image),
                  (ros_node.create_publisher(Detection2DArray, f'{NAMESPACE}/detections', 10), detections)]
    received: list[PointCloud2] = []
    ros_node.create_subscription(PointCloud2, f'{NAMESPACE}/box_corners', received.append, 10)

    def publish_all() -> None:
        # Re-sent until the answer arrives: with volatile QoS anything sent before discovery completes is lost.
        for publisher, msg in publishers:
            publisher.publish(msg)

    cmd = [venv_script('box_cloud_node'), '--ros-args', '-r', '__node:=box_cloud_under_test',
           '-r', f'__ns:={NAMESPACE}', '-p', f'depth_m:={DEPTH_M}']
    with start_process(cmd) as child:
        spin_until(ros_node, lambda: bool(received), timeout_s=30.0, what='a cloud on box_corners',
                   on_tick=publish_all, tick_s=0.2)
        assert child.stop() == 0, 'SIGINT should end the node cleanly (exit 0)'

    cloud = received[0]
    points, ids = expected_corners(BOXES, DEPTH_M)
    expected = points_to_cloud(points, header, {'object_id': ids})
    assert cloud.header == header
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (1, 8, 16, 128)
    assert cloud.fields == expected.fields
    assert [(f.name, f.offset) for f in cloud.fields] == [('x', 0), ('y', 4), ('z', 8), ('object_id', 12)]
    assert not cloud.is_bigendian and cloud.is_dense
    assert bytes(cloud.data) == bytes(expected.data)


def test_out_of_range_depth_is_rejected_with_a_clear_message():
    cmd = [venv_script('box_cloud_node'), '--ros-args', '-r', '__node:=box_cloud_bad_param', '-p', 'depth_m:=-1.0']
    with start_process(cmd) as child:
        code = child.wait_exit(timeout_s=30.0)
        output = child.output()
    assert code != 0, output
    assert 'depth_m' in output and 'out of range' in output, output
    assert 'Traceback' not in output, output
