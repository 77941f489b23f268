"""
The node's output messages without ROS (mesc3d_ros/object_messages.py).

Hand-made objects in, the documented cloud layout and Detection3DArray out (docs/node.md §Interface), checked field
by field and through CDR.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray

from mesc3d_ros import geometry
from mesc3d_ros.conversions import cloud_to_structured
from mesc3d_ros.object_messages import FIT_RESIDUAL_ID, VISIBLE_POINTS_ID, objects_to_messages
from mesc3d_ros.pipeline import ObjectCloud

HEADER = Header(stamp=Time(sec=5, nanosec=7), frame_id='camera_optical')
TURN = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90° about z


def make_object(index: int, mode: str, count: int, rotation: np.ndarray = np.eye(3)) -> ObjectCloud:
    centre = np.array([0.1 * index, -0.2, 1.0 + index])
    points = (centre + np.random.default_rng(index).normal(0, 0.05, (count, 3))).astype(np.float32)  # (count, 3)
    fitted = mode == 'fit'
    return ObjectCloud(detection_index=index, detector_class=f'class_{index}', model_class='mug', zero_shot=False,
                       score=0.5 + 0.1 * index, points=points,
                       placement=geometry.Placement(centre=centre, radius_m=0.1, rotation=rotation, mode=mode),
                       box_centre=centre + 0.01, box_size_m=np.array([0.2, 0.3, 0.4]),
                       fit_rms_m=0.004 if fitted else float('nan'), visible_points=250 if fitted else 0)


def test_cloud_holds_every_object_with_its_index_and_the_detections_describe_them():
    objects = [make_object(0, 'size_prior', 5), make_object(2, 'fit', 3, TURN)]
    cloud, detections = objects_to_messages(objects, ['mug_a', 'unused', ''], HEADER)
    cloud = deserialize_message(serialize_message(cloud), PointCloud2)
    detections = deserialize_message(serialize_message(detections), Detection3DArray)
    assert cloud.header == HEADER and detections.header == HEADER
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ('x', 0, PointField.FLOAT32), ('y', 4, PointField.FLOAT32), ('z', 8, PointField.FLOAT32),
        ('object_index', 12, PointField.UINT32)]
    assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (1, 8, 16, True)
    table = cloud_to_structured(cloud)
    assert table['object_index'].tolist() == [0] * 5 + [1] * 3
    xyz = np.stack([table['x'], table['y'], table['z']], axis=1)
    np.testing.assert_array_equal(xyz, np.concatenate([obj.points for obj in objects]))

    first, second = detections.detections
    assert [first.id, second.id] == ['mug_a', '2']  # an empty Detection2D id becomes the detection's index
    assert [(r.hypothesis.class_id, r.hypothesis.score) for r in first.results] == [('class_0', 0.5)]
    assert not any(first.results[0].pose.covariance)
    position = second.results[0].pose.pose.position
    assert [position.x, position.y, position.z] == objects[1].placement.centre.tolist()
    orientation = second.results[0].pose.pose.orientation
    np.testing.assert_allclose([orientation.x, orientation.y, orientation.z, orientation.w],
                               [0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    assert second.bbox.center.orientation == orientation
    assert [second.bbox.size.x, second.bbox.size.y, second.bbox.size.z] == [0.2, 0.3, 0.4]
    np.testing.assert_allclose([second.bbox.center.position.x, second.bbox.center.position.z],
                               [objects[1].box_centre[0], objects[1].box_centre[2]])


def test_a_fitted_object_carries_its_residual_and_visible_points():
    cloud, detections = objects_to_messages([make_object(0, 'fit', 4)], [''], HEADER)
    (detection,) = detections.detections
    assert [(r.hypothesis.class_id, r.hypothesis.score) for r in detection.results] == [
        ('class_0', 0.5), (FIT_RESIDUAL_ID, 0.004), (VISIBLE_POINTS_ID, 250.0)]
    covariance = np.asarray(detection.results[0].pose.covariance).reshape(6, 6)
    np.testing.assert_allclose(covariance, np.diag([0.004 ** 2] * 3 + [0.0] * 3))
    assert all(r.pose == detection.results[0].pose for r in detection.results)


def test_no_objects_give_an_empty_cloud_and_an_empty_array_with_the_header():
    cloud, detections = objects_to_messages([], [], HEADER)
    assert (cloud.width, cloud.height, len(cloud.data), len(cloud.fields)) == (0, 1, 0, 4)
    assert detections.detections == [] and cloud.header == HEADER and detections.header == HEADER
