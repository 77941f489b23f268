"""
The node's outputs from the pipeline's objects: one frame's PointCloud2 and Detection3DArray.

docs/node.md §Interface is the specification. Message types only, no rclpy.

The cloud holds every object's points (x, y, z float32 metres, optical frame) plus a uint32 ``object_index``; the
Detection3DArray's detection *i* describes ``object_index`` *i*: ``results[0]`` is the detector's class and score
with the centroid pose, ``bbox`` the shape's box, ``id`` the Detection2D id (or its index when that is empty). A
shape fitted to depth adds its fit quality as two more hypotheses and its residual² on the pose covariance.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion, Vector3
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis, ObjectHypothesisWithPose

from mesc3d_ros import geometry
from mesc3d_ros.conversions import points_to_cloud
from mesc3d_ros.pipeline import ObjectCloud

FIT_RESIDUAL_ID, VISIBLE_POINTS_ID = 'mesc3d/fit_residual_m', 'mesc3d/visible_points'
"""class_id of the extra hypotheses that carry a fitted object's fit quality (docs/node.md §Outputs)."""


def _point(xyz: np.ndarray) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def fit_hypotheses(obj: ObjectCloud, pose: PoseWithCovariance) -> list[ObjectHypothesisWithPose]:
    """
    Return a fitted object's fit quality as two more ``results`` after its class; none for an unfitted object.

    Their scores: the fit's trimmed RMS residual in metres, and the number of measured visible points it used.
    """
    if obj.placement.mode != 'fit':
        return []
    return [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=FIT_RESIDUAL_ID, score=obj.fit_rms_m),
                                     pose=pose),
            ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=VISIBLE_POINTS_ID,
                                                                 score=float(obj.visible_points)), pose=pose)]


def objects_to_messages(objects: list[ObjectCloud], ids: list[str],
                        header: Header) -> tuple[PointCloud2, Detection3DArray]:
    """
    Return the frame's cloud (x, y, z, object_index) and its Detection3DArray, both with ``header``.

    ``ids`` are the frame's Detection2D ids, indexed by ``ObjectCloud.detection_index``. Each Detection3D's
    ``results[0]`` is the detector's class and score with the centroid pose; a fitted object has ``results[1]``
    (class_id ``mesc3d/fit_residual_m``) and ``results[2]`` (``mesc3d/visible_points``), and its pose covariance
    carries the residual² on the position diagonal (m²), so a planner can tell a tight fit from a guess with
    standard fields.
    """
    if objects:
        points = np.concatenate([obj.points for obj in objects])  # (M·N, 3) float32 metres, optical frame
        index = np.repeat(np.arange(len(objects), dtype=np.uint32), [len(obj.points) for obj in objects])
    else:
        points, index = np.zeros((0, 3), np.float32), np.zeros(0, np.uint32)
    cloud = points_to_cloud(points, header, {'object_index': index})
    detections = []
    for obj in objects:
        x, y, z, w = geometry.rotation_to_quaternion(obj.placement.rotation).tolist()
        orientation = Quaternion(x=x, y=y, z=z, w=w)
        centroid = Pose(position=_point(obj.placement.centre), orientation=orientation)
        box = BoundingBox3D(center=Pose(position=_point(obj.box_centre), orientation=orientation), size=Vector3(
            x=float(obj.box_size_m[0]), y=float(obj.box_size_m[1]), z=float(obj.box_size_m[2])))
        pose = PoseWithCovariance(pose=centroid)
        if obj.placement.mode == 'fit':
            variance = np.zeros(36)  # 6 x 6 row-major (x, y, z, rotations); only the position is estimated
            variance[[0, 7, 14]] = obj.fit_rms_m ** 2
            pose.covariance = variance
        hypothesis = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=obj.detector_class, score=obj.score), pose=pose)
        detections.append(Detection3D(header=header, results=[hypothesis, *fit_hypotheses(obj, pose)], bbox=box,
                                      id=ids[obj.detection_index] or str(obj.detection_index)))
    return cloud, Detection3DArray(header=header, detections=detections)
