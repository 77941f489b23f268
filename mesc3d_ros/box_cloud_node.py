"""
``box_cloud_node``: detection boxes back-projected to a fixed depth, as a PointCloud2.

A sanity tool for a detector and a camera: shown in RViz next to the camera's own depth cloud, the four corners of
every box should frame the object at about ``depth_m``. If they land off-centre, the CameraInfo does not belong to
the image (intrinsics or resolution mismatch); if no cloud appears, the detections do not carry the image's stamp.
It is also the subject of the foundation's two-process DDS test.

Topics (relative names, remap at launch):

- in  ``image``        sensor_msgs/Image, any encoding of ``conversions.IMAGE_ENCODINGS``
- in  ``detections``   vision_msgs/Detection2DArray, header stamp equal to its image's stamp
- in  ``camera_info``  sensor_msgs/CameraInfo, the latest one is used
- out ``box_corners``  sensor_msgs/PointCloud2, header = image header; metres in the camera optical frame
  (x right, y down, z forward); 4 points per box in the order (x0, y0), (x1, y0), (x1, y1), (x0, y1), with a
  uint32 ``object_id`` field = the detection's index in its array. Distortion is ignored (pinhole model).

Parameters: ``depth_m`` (read for every image, so ``ros2 param set`` takes effect at once).
"""

from __future__ import annotations

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from vision_msgs.msg import Detection2DArray

from mesc3d_ros.conversions import (CameraIntrinsics, camera_info_to_intrinsics, detections_to_arrays,
                                    image_to_numpy, points_to_cloud, stamp_to_ns)
from mesc3d_ros.sync import TimeSynchronizer

IMAGE, DETECTIONS = 0, 1  # stream indices in the synchroniser


def box_corner_points(boxes_xyxy: np.ndarray, k: np.ndarray, depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Corners of (K, 4) pixel boxes on the plane z = ``depth_m``: (4K, 3) float32 metres and (4K,) uint32 box index."""
    x0, y0, x1, y1 = np.asarray(boxes_xyxy, dtype=np.float64).T  # each (K,) pixels
    u = np.stack([x0, x1, x1, x0], axis=1).ravel()  # (4K,) corners of box 0, then box 1, ...
    v = np.stack([y0, y0, y1, y1], axis=1).ravel()
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    points = np.stack([(u - cx) / fx * depth_m, (v - cy) / fy * depth_m, np.full_like(u, depth_m)], axis=1)
    object_ids = np.repeat(np.arange(len(x0), dtype=np.uint32), 4)  # (4K,)
    return points.astype(np.float32), object_ids


class BoxCloudNode(Node):
    """Subscribes image, detections and camera_info; publishes each box's back-projected corners."""

    def __init__(self, qos: QoSProfile = qos_profile_sensor_data, queue_size: int = 10) -> None:
        super().__init__('box_cloud_node')
        self.declare_parameter('depth_m', 2.0, ParameterDescriptor(
            description='Depth of the plane the box corners are projected onto, metres along the optical axis',
            floating_point_range=[FloatingPointRange(from_value=0.01, to_value=1000.0)]))
        self._intrinsics: CameraIntrinsics | None = None
        self._sync: TimeSynchronizer[Image | Detection2DArray] = TimeSynchronizer(2, queue_size=queue_size)
        self._publisher = self.create_publisher(PointCloud2, 'box_corners', 10)
        self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, qos)
        self.create_subscription(Image, 'image', self._on_image, qos)
        self.create_subscription(Detection2DArray, 'detections', self._on_detections, qos)
        self.get_logger().info(f'projecting boxes to depth_m={self.get_parameter("depth_m").value} on '
                               f'{self._publisher.topic_name}')

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._intrinsics = camera_info_to_intrinsics(msg)
        except ValueError as exc:
            self.get_logger().error(f'ignoring camera_info: {exc}', throttle_duration_sec=5.0)

    def _on_image(self, msg: Image) -> None:
        self._add(IMAGE, msg)

    def _on_detections(self, msg: Detection2DArray) -> None:
        self._add(DETECTIONS, msg)

    def _add(self, stream: int, msg: Image | Detection2DArray) -> None:
        try:
            stamp = stamp_to_ns(msg.header.stamp)
        except ValueError as exc:  # nanosec out of range: a malformed header must not end this node
            self.get_logger().error(f'ignoring message: {exc}', throttle_duration_sec=5.0)
            return
        self._on_synced(self._sync.add(stream, stamp, msg))

    def _on_synced(self, pair: tuple[Image, Detection2DArray] | None) -> None:
        if pair is None:
            return
        image, detections = pair
        if self._intrinsics is None:
            self.get_logger().warning('no camera_info received yet; dropping image', throttle_duration_sec=5.0)
            return
        try:
            pixels = image_to_numpy(image)
        except ValueError as exc:
            self.get_logger().error(f'dropping image: {exc}', throttle_duration_sec=5.0)
            return
        if pixels.shape[:2] != (self._intrinsics.height, self._intrinsics.width):
            self.get_logger().warning(
                f'image is {pixels.shape[1]}x{pixels.shape[0]} but camera_info says '
                f'{self._intrinsics.width}x{self._intrinsics.height}: intrinsics do not belong to this image',
                throttle_duration_sec=5.0)
        depth_m = self.get_parameter('depth_m').get_parameter_value().double_value
        points, object_ids = box_corner_points(detections_to_arrays(detections).boxes, self._intrinsics.k, depth_m)
        self._publisher.publish(points_to_cloud(points, image.header, {'object_id': object_ids}))


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = BoxCloudNode()
        rclpy.spin(node)
    except InvalidParameterValueException as exc:
        # An out-of-range -p/--params-file value: say which, and exit non-zero instead of a traceback.
        rclpy.logging.get_logger('box_cloud_node').fatal(str(exc))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
