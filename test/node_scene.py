"""
What the reconstruct_node tests share: a rendered scene with ground truth, a camera publishing it, the node's factories.

Frames are rendered by the dataset's own loader and renderer (training/data): the tiny dataset objects (two mugs
and a random shape) stand upright in front of one pinhole camera, each rendered separately with the same K and
composited by depth, so every pixel is a true perspective view; boxes come from the visible masks, depth is
millimetre 16UC1 as a RealSense driver sends it. The model is the random-weight MESC-3D of test/model_fixtures.py
(real bindings, class table and checks). The fixtures are imported by the test modules that use them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray

from mesc3d_ros.conversions import (IMAGE_ENCODINGS, CameraIntrinsics, arrays_to_detections, cloud_to_structured,
                                    intrinsics_to_camera_info, numpy_to_image)
from ros_helpers import NodeFactory, RunningNode, spin_until


REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / 'config' / 'reconstruct.yaml'
SIZE = 480  # square frames: the dataset renderer draws square images
K = np.array([[450.0, 0.0, (SIZE - 1) / 2], [0.0, 450.0, (SIZE - 1) / 2], [0.0, 0.0, 1.0]])
FRAME_ID = 'camera_color_optical_frame'
NUM_POINTS = 64  # the random model's
# (object id, centroid in the optical frame in metres, yaw in degrees); the camera looks down at 30°.
LAYOUT = (('pybullet_mug', (-0.18, 0.06, 0.80), 30.0),
          ('random_007', (0.02, -0.08, 0.95), -50.0),
          ('sh3d_katorlegaz_coffee_mug', (0.20, 0.10, 0.75), 120.0))
ELEVATION_DEG = 30.0


# ---- rendered frames ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SceneObject:
    object_id: str
    category: str
    centroid: np.ndarray
    """(3,) metres, optical frame: the ground truth placement must recover."""
    radius_m: float


@dataclass(frozen=True, eq=False)
class Scene:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_mm: np.ndarray  # (H, W) uint16, 0 = no reading
    boxes: np.ndarray  # (K, 4) xyxy pixels around each object's visible mask
    objects: tuple[SceneObject, ...]


def upright_rotation(yaw_deg: float) -> np.ndarray:
    """Object (Y up) -> optical frame for an upright object turned by ``yaw``, seen from ELEVATION_DEG above."""
    yaw, elevation = np.deg2rad(yaw_deg), np.deg2rad(ELEVATION_DEG)
    turn = np.array([[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0], [-np.sin(yaw), 0.0, np.cos(yaw)]])
    level = np.diag([1.0, -1.0, -1.0])  # object up -> image up, object +Z -> towards the camera
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(elevation), -np.sin(elevation)],
                     [0.0, np.sin(elevation), np.cos(elevation)]])
    return tilt @ level @ turn


def render_scene() -> Scene:
    from mesc3d_training.data.render import ObjectRenderer
    from mesc3d_training.data.sources import list_sources, load_object, sample_surface

    sources = {source.object_id: source for source in list_sources()[0]}
    rgb = np.full((SIZE, SIZE, 3), 90, np.uint8)
    depth = np.full((SIZE, SIZE), np.inf)
    owner = np.full((SIZE, SIZE), -1)
    objects = []
    renderer = ObjectRenderer(SIZE, scene_ranges=None)  # each object alone: this test composes its own scene
    try:
        for index, (object_id, centroid, yaw) in enumerate(LAYOUT):
            loaded = load_object(sources[object_id])
            points = sample_surface(loaded, 16384, seed=0)  # (N, 3) metres, object frame
            centre = points.mean(axis=0)
            pose = np.eye(4)
            pose[:3, :3] = upright_rotation(yaw)
            pose[:3, 3] = np.array(centroid) - pose[:3, :3] @ centre
            view = renderer.render_views(loaded, [(K, pose)], np.random.default_rng(index))[0]
            color, mask, z = view['rgb'], view['mask'], view['depth']
            nearer = mask & (z < depth)
            rgb[nearer], depth[nearer], owner[nearer] = color[nearer], z[nearer], index
            objects.append(SceneObject(object_id, sources[object_id].category, np.array(centroid),
                                       float(np.linalg.norm(points - centre, axis=1).max())))
    finally:
        renderer.close()
    boxes = []
    for index in range(len(objects)):
        rows, cols = np.nonzero(owner == index)
        boxes.append([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
    depth_mm = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).astype(np.uint16)
    return Scene(rgb=rgb, depth_mm=depth_mm, boxes=np.array(boxes), objects=tuple(objects))


# ---- talking to the node -----------------------------------------------------------------------------------------
def header_at(sec: int) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=250_000_000), frame_id=FRAME_ID)


class Camera:
    """Publishes frames to a node under ``namespace`` and collects what it answers, keyed by stamp."""

    def __init__(self, ros_node, namespace: str) -> None:
        self.node = ros_node
        self.namespace = namespace
        self.image = ros_node.create_publisher(Image, f'{namespace}/image', 10)
        self.depth = ros_node.create_publisher(Image, f'{namespace}/depth', 10)
        self.info = ros_node.create_publisher(CameraInfo, f'{namespace}/camera_info', 10)
        self.detections = ros_node.create_publisher(Detection2DArray, f'{namespace}/detections', 10)
        self.clouds: dict[int, PointCloud2] = {}
        self.objects: dict[int, Detection3DArray] = {}
        self.diagnostics: list[DiagnosticArray] = []
        ros_node.create_subscription(PointCloud2, f'{namespace}/mesc3d/points',
                                     lambda msg: self.clouds.setdefault(msg.header.stamp.sec, msg), 10)
        ros_node.create_subscription(Detection3DArray, f'{namespace}/mesc3d/objects',
                                     lambda msg: self.objects.setdefault(msg.header.stamp.sec, msg), 10)
        ros_node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        if any(status.name.startswith(f'{self.namespace}/') for status in msg.status):
            self.diagnostics.append(msg)

    def diagnostic_values(self) -> dict[str, str]:
        """Key/values of the node's latest /diagnostics status."""
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values} if self.diagnostics else {}

    def wait_connected(self, with_depth: bool, timeout_s: float = 30.0) -> None:
        publishers = [self.image, self.info, self.detections] + ([self.depth] if with_depth else [])
        spin_until(self.node, lambda: all(p.get_subscription_count() > 0 for p in publishers), timeout_s,
                   f'the node under {self.namespace} to subscribe')

    def publish(self, scene: Scene, sec: int, depth: bool = True, info: bool = True, image: np.ndarray | None = None,
                encoding: str = 'rgb8', depth_mm: np.ndarray | None = None, boxes: np.ndarray | None = None,
                classes: list[str] | None = None, with_image: bool = True, scores: np.ndarray | None = None) -> None:
        """One frame; every message carries the stamp ``sec``. Arguments replace parts with bad variants."""
        header = header_at(sec)
        boxes = scene.boxes if boxes is None else boxes
        classes = [o.category for o in scene.objects] if classes is None else classes
        ids = [o.object_id for o in scene.objects][:len(boxes)] + [''] * max(0, len(boxes) - len(scene.objects))
        if info:
            self.info.publish(intrinsics_to_camera_info(CameraIntrinsics(k=K, width=SIZE, height=SIZE), header))
        if depth:
            self.depth.publish(numpy_to_image(scene.depth_mm if depth_mm is None else depth_mm, '16UC1', header))
        if with_image:
            pixels = scene.rgb if image is None else image
            if encoding in IMAGE_ENCODINGS:
                self.image.publish(numpy_to_image(pixels, encoding, header))
            else:  # an encoding the node does not know: valid pixels under a bad name
                message = numpy_to_image(pixels, 'rgb8', header)
                message.encoding = encoding
                self.image.publish(message)
        scores = np.full(len(boxes), 0.9) if scores is None else scores
        self.detections.publish(arrays_to_detections(boxes, classes, scores, header, ids))

    def answer(self, sec: int, resend, timeout_s: float = 20.0) -> tuple[PointCloud2, Detection3DArray]:
        """
        Wait for the cloud and objects stamped ``sec``, calling ``resend`` every 2 s.

        Volatile QoS loses what is sent before a match completes.
        """
        spin_until(self.node, lambda: sec in self.clouds and sec in self.objects, timeout_s,
                   f'the answer to frame {sec} under {self.namespace}', on_tick=resend, tick_s=2.0)
        return self.clouds[sec], self.objects[sec]


def check_frame(cloud: PointCloud2, objects: Detection3DArray, scene: Scene, sec: int, tolerance: float,
                expected_ids: list[str] | None = None) -> None:
    """Layout, header, per-object split, and each object's centroid within ``tolerance`` × camera distance."""
    assert cloud.header == header_at(sec) and objects.header == header_at(sec)
    expected_ids = [o.object_id for o in scene.objects] if expected_ids is None else expected_ids
    assert [d.id for d in objects.detections] == expected_ids
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ('x', 0, PointField.FLOAT32), ('y', 4, PointField.FLOAT32), ('z', 8, PointField.FLOAT32),
        ('object_index', 12, PointField.UINT32)]
    assert (cloud.height, cloud.width, cloud.is_dense) == (1, NUM_POINTS * len(expected_ids), True)
    table = cloud_to_structured(cloud)
    assert Counter(table['object_index'].tolist()) == {i: NUM_POINTS for i in range(len(expected_ids))}
    truth = {o.object_id: o for o in scene.objects}
    for index, detection in enumerate(objects.detections):
        points = table[table['object_index'] == index]
        xyz = np.stack([points['x'], points['y'], points['z']], axis=1).astype(np.float64)
        centroid = truth[detection.id].centroid
        error = np.linalg.norm(xyz.mean(axis=0) - centroid) / np.linalg.norm(centroid)
        assert error <= tolerance, f'{detection.id}: centroid off by {100 * error:.1f} % of the camera distance'
        pose = detection.results[0].pose.pose.position
        np.testing.assert_allclose([pose.x, pose.y, pose.z], xyz.mean(axis=0), atol=1e-5)
        assert detection.results[0].hypothesis.class_id == truth[detection.id].category
        size = detection.bbox.size
        assert 0 < max(size.x, size.y, size.z) <= 2.05 * np.linalg.norm(xyz - xyz.mean(axis=0), axis=1).max()


def deployed_node(factory: NodeFactory, contract_path: Path, overlay_params: Path) -> RunningNode:
    """Return the node as deployed with a camera: the shipped params file, a camera overlay, -p overrides."""
    return factory((PARAMS_FILE, overlay_params), model_path=contract_path, use_depth=True, queue_size=4)
