"""``reconstruct_node``: camera images + 2D detections in, one metric point cloud per frame out.

A thin lifecycle adapter over :class:`mesc3d_ros.pipeline.ReconstructionPipeline`; docs/node.md is the manual.

Topics (relative names, remap at launch):

- in  ``image``          sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8), sensor-data QoS (``image_reliability``)
- in  ``detections``     vision_msgs/Detection2DArray, matched to images by header stamp (``sync_slop_s``)
- in  ``camera_info``    sensor_msgs/CameraInfo: the one with the frame's stamp, else the newest valid one before it
- in  ``depth``          sensor_msgs/Image 16UC1 (× ``depth_scale_m``) or 32FC1 metres, registered to ``image``;
  only with ``use_depth``
- out ``mesc3d/points``  sensor_msgs/PointCloud2, reliable: every object of one frame, x, y, z float32 metres in the
  camera optical frame (REP-103: x right, y down, z forward) + uint32 ``object_index`` = index of the object in
  the same frame's ``mesc3d/objects``; header = the image's (``output_frame`` renames the frame id)
- out ``mesc3d/objects`` vision_msgs/Detection3DArray, same header: class, score, id and 3D box of every object;
  with depth, the shape fit's residual and visible point count (:func:`objects_to_messages`)
- out ``/diagnostics``   diagnostic_msgs/DiagnosticArray every ``diagnostics_period_s``

Callbacks only match messages; a worker thread reconstructs the newest matched frame, so inference never blocks the
executor and a frame that is overtaken before the worker gets to it is dropped and counted.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion, Vector3
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox3D, Detection2DArray, Detection3D, Detection3DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)

from mesc3d_ros import geometry, output_guard
from mesc3d_ros.contract import load_contract
from mesc3d_ros.conversions import (CameraIntrinsics, camera_info_to_intrinsics, detections_to_arrays,
                                    image_to_numpy, points_to_cloud, stamp_to_ns)
from mesc3d_ros.diagnostics import CauseLog, NodeStats, diagnostic_array
from mesc3d_ros.inference import create_backend
from mesc3d_ros.package_share import DEFAULT_MODEL, resolve_model
from mesc3d_ros.pipeline import MIN_DEPTH_READING_M, ObjectCloud, PipelineSettings, ReconstructionPipeline
from mesc3d_ros.safe_text import LINE_CHARS, printable
from mesc3d_ros.sync import StampedHistory, TimeSynchronizer

NODE_NAME = 'reconstruct_node'
IMAGE, DETECTIONS, DEPTH = 0, 1, 2  # stream indices in the synchroniser
INPUT_TOPICS = ('image', 'detections', 'camera_info', 'depth')  # relative: remap them
POINTS_TOPIC, OBJECTS_TOPIC, DIAGNOSTICS_TOPIC = 'mesc3d/points', 'mesc3d/objects', '/diagnostics'
OUTPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # what RViz subscribes with by default
DEPTH_WAIT_S = 5.0
"""With use_depth, seconds after activation without any depth image before it is reported (log + /diagnostics)."""
CAMERA_INFO_HISTORY = 64
"""CameraInfo messages kept for matching to frames: 2 s of a 30 Hz camera, longer than a detector takes."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``default`` None: a string array without default (rclpy cannot type an empty list)."""

    name: str
    default: str | int | float | bool | None
    description: str
    choices: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    """Inclusive [low, high] for numbers, enforced by rclpy."""


PARAMETERS = (
    ParamSpec('model_path', DEFAULT_MODEL, 'Model contract JSON written by `mesc3d export` (the ONNX file lies '
              'next to it), or the name of a model shipped in the package\'s models/ folder'),
    ParamSpec('backend', 'auto', 'Inference backend; auto = TensorRT when usable, else ONNX Runtime',
              choices=('auto', 'tensorrt', 'onnxruntime')),
    ParamSpec('precision', 'auto', 'Model file to run, checked at configure against what the contract offers: '
              'auto = fp16 on TensorRT, int8 on ONNX Runtime when exported, else fp32; int8 is ONNX Runtime only',
              choices=('auto', 'fp32', 'fp16', 'int8')),
    ParamSpec('engine_dir', '', 'Folder for cached TensorRT engines; empty = next to the model'),
    ParamSpec('max_batch', 8, 'Most objects sent to the backend in one call (a frame with more is split)',
              value_range=(1, 64)),
    ParamSpec('cpu_threads', 0, 'ONNX Runtime intra-op threads; 0 = one per core', value_range=(0, 256)),
    ParamSpec('min_score', 0.0, 'Detections scoring below this are ignored', value_range=(0.0, 1.0)),
    ParamSpec('max_objects', 32, 'Most detections reconstructed per frame, highest scores first (the rest are '
              'counted); fewer if the cloud would exceed 4 MiB', value_range=(1, 1024)),
    ParamSpec('class_map', None, 'Detector class id to model class, as "id:model_class" strings, e.g. "41:cup"; '
              'ids not listed are used as model class names'),
    ParamSpec('unknown_class', 'zero_shot', 'A class the model lacks: zero_shot = the generic class embedding, '
              'skip = no cloud', choices=('zero_shot', 'skip')),
    ParamSpec('crop_padding', -1.0, 'Relative padding around a box before squaring; negative = the model '
              "contract's (what the model was trained with)", value_range=(-1.0, 4.0)),
    ParamSpec('placement', 'auto', 'Metric placement: auto = depth when valid, else class size prior; depth = the '
              'same, but missing depth is reported; size_prior = ignore depth',
              choices=('auto', 'depth', 'size_prior')),
    ParamSpec('use_depth', False, 'Subscribe to `depth` (registered to the image) and match it by stamp too'),
    ParamSpec('depth_fit', True, 'With depth: fit each predicted shape (scale, translation) to the object\'s '
              'measured visible surface; false = box and median depth only'),
    ParamSpec('output_cloud', 'predicted', 'Points published per object: predicted = the placed predicted shape; '
              'fused = the measured visible points of a fitted object plus its predicted hidden side',
              choices=('predicted', 'fused')),
    ParamSpec('depth_scale_m', 0.001, 'Metres per count of a 16UC1 depth image', value_range=(1e-6, 1.0)),
    ParamSpec('depth_roi_fraction', 0.5, 'Side of the central box region whose median depth is the front '
              'surface, as a fraction of the box side', value_range=(0.05, 1.0)),
    ParamSpec('min_depth_m', 0.05, 'Depth readings nearer than this are invalid (below 1 mm never count)',
              value_range=(MIN_DEPTH_READING_M, 100.0)),
    ParamSpec('max_depth_m', 20.0, 'Depth readings farther than this are invalid', value_range=(0.01, 1000.0)),
    ParamSpec('min_valid_depth_fraction', 0.1, 'Share of valid readings the region needs, else the size prior is '
              'used', value_range=(0.0, 1.0)),
    ParamSpec('placement_box_fill', 0.81, 'Box half-size as a fraction of the bounding sphere\'s silhouette '
              '(1 for spheres); measured median over dataset objects', value_range=(0.05, 1.0)),
    ParamSpec('placement_centre_offset', 0.35, 'How far the centroid lies behind the median surface depth, in '
              'silhouette radii (1 for spheres); measured median over dataset objects', value_range=(0.0, 2.0)),
    ParamSpec('output_frame', '', 'frame_id written into the outputs; empty = the image frame (no TF is applied)'),
    ParamSpec('sync_slop_s', 0.0, 'Largest stamp difference between matched image, detections (and depth); '
              '0 = exact match', value_range=(0.0, 10.0)),
    ParamSpec('queue_size', 10, 'Messages kept per input stream while waiting for partners', value_range=(1, 1000)),
    ParamSpec('image_reliability', 'best_effort', 'QoS reliability of the image, depth and camera_info '
              'subscriptions', choices=('best_effort', 'reliable')),
    ParamSpec('detections_reliability', 'best_effort', 'QoS reliability of the detections subscription '
              '(best_effort also receives from reliable publishers)', choices=('best_effort', 'reliable')),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of /diagnostics', value_range=(0.1, 60.0)),
    ParamSpec('autostart', True, 'Configure and activate at start; false = wait for lifecycle transitions'),
)


class ParameterError(ValueError):
    """An invalid parameter value; the message names the parameter, the value and what is allowed."""


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description)
    if spec.choices:
        descriptor.additional_constraints = f'one of: {", ".join(spec.choices)}'
    if spec.value_range is not None:
        low, high = spec.value_range
        if isinstance(spec.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
    return descriptor


def validate(values: dict[str, object]) -> None:
    """Checks rclpy cannot express: enumerations, the class map format, and rules between parameters."""
    for spec in PARAMETERS:
        if spec.choices and spec.name in values and values[spec.name] not in spec.choices:
            raise ParameterError(f'parameter "{spec.name}" is {values[spec.name]!r}; allowed: '
                                 f'{", ".join(spec.choices)}')
    parse_class_map(values.get('class_map') or [])
    if values.get('min_depth_m', 0.0) >= values.get('max_depth_m', np.inf):
        raise ParameterError(f'min_depth_m ({values["min_depth_m"]}) must be below max_depth_m '
                             f'({values["max_depth_m"]})')
    if values.get('placement') == 'depth' and values.get('use_depth') is False:
        raise ParameterError('placement is "depth" but use_depth is false: set use_depth:=true or placement:=auto')


def parse_class_map(entries: list[str]) -> dict[str, str]:
    """``["41:cup", "coco:44:bottle"]`` -> ``{"41": "cup", "coco:44": "bottle"}`` (split at the last colon)."""
    mapping = {}
    for entry in entries:
        detector_id, colon, model_class = entry.rpartition(':')
        if not (colon and detector_id and model_class):
            raise ParameterError(f'parameter "class_map" entry {entry!r} is not "detector_id:model_class"')
        mapping[detector_id] = model_class
    return mapping


@dataclass(frozen=True)
class BadCameraInfo:
    """A CameraInfo that failed validation, kept so that the frame with its stamp is skipped, not answered."""

    reason: str


CameraInfoEntry = CameraIntrinsics | BadCameraInfo


@dataclass(frozen=True, eq=False)
class Frame:
    """A matched set of inputs waiting for the worker."""

    image: Image
    detections: Detection2DArray
    depth: Image | None
    camera_info: CameraInfoEntry | None
    """The frame's CameraInfo (same stamp) or the newest valid one before it; None if there is none."""
    matched_s: float
    """time.monotonic() when the set was complete."""


class FrameSlot:
    """Holds the newest frame only: ``put`` replaces an unprocessed frame (the caller counts it as dropped)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; True when it overwrote one the worker had not taken."""
        with self._condition:
            replaced = self._frame is not None
            self._frame = frame
            self._condition.notify()
            return replaced

    def take(self) -> Frame | None:
        """Block until a frame is there (returned) or the slot is closed (None)."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed)
            frame, self._frame = self._frame, None
            return None if self._closed else frame

    def clear(self) -> None:
        with self._condition:
            self._frame = None

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a colour or mono8 image; ValueError for anything else."""
    pixels = image_to_numpy(msg)
    if msg.encoding in ('rgb8', 'rgba8'):
        return np.ascontiguousarray(pixels[:, :, :3])
    if msg.encoding in ('bgr8', 'bgra8'):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if msg.encoding in ('mono8', '8UC1'):
        return np.repeat(pixels[:, :, None], 3, axis=2)
    raise ValueError(f'image encoding {printable(msg.encoding)!r} is not a colour encoding; use rgb8, bgr8, rgba8, '
                     f'bgra8 or mono8')


def depth_to_metres(msg: Image, scale_m: float) -> np.ndarray:
    """(H, W) float32 metres of a 16UC1/mono16 (× ``scale_m``) or 32FC1 depth image; ValueError otherwise."""
    pixels = image_to_numpy(msg)
    if msg.encoding in ('16UC1', 'mono16'):
        return pixels.astype(np.float32) * np.float32(scale_m)  # 0 stays 0: no reading
    if msg.encoding == '32FC1':
        return pixels
    raise ValueError(f'depth encoding {printable(msg.encoding)!r} is not 16UC1, mono16 or 32FC1')


def _point(xyz: np.ndarray) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


FIT_RESIDUAL_ID, VISIBLE_POINTS_ID = 'mesc3d/fit_residual_m', 'mesc3d/visible_points'
"""class_id of the extra hypotheses that carry a fitted object's fit quality (docs/node.md §Outputs)."""


def fit_hypotheses(obj: ObjectCloud, pose: PoseWithCovariance) -> list[ObjectHypothesisWithPose]:
    """A fitted object's fit quality as two more ``results`` after its class: score = the fit's trimmed RMS residual
    in metres, and score = the number of measured visible points it used; none for an object that was not fitted."""
    if obj.placement.mode != 'fit':
        return []
    return [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=FIT_RESIDUAL_ID, score=obj.fit_rms_m),
                                     pose=pose),
            ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=VISIBLE_POINTS_ID,
                                                                 score=float(obj.visible_points)), pose=pose)]


def objects_to_messages(objects: list[ObjectCloud], ids: list[str],
                        header: Header) -> tuple[PointCloud2, Detection3DArray]:
    """The frame's cloud (x, y, z, object_index) and its Detection3DArray, both with ``header``.

    Each Detection3D's ``results[0]`` is the detector's class and score with the centroid pose; a fitted object
    has ``results[1]`` (class_id ``mesc3d/fit_residual_m``) and ``results[2]`` (``mesc3d/visible_points``), and
    its pose covariance carries the residual² on the position diagonal (m²), so a planner can tell a tight fit
    from a guess with standard fields.
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


class ReconstructNode(LifecycleNode):
    """configure: load and check the model; activate: subscribe; deactivate: unsubscribe; cleanup: free the model."""

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        for spec in PARAMETERS:
            default = Parameter.Type.STRING_ARRAY if spec.default is None else spec.default
            self.declare_parameter(spec.name, default, _descriptor(spec))
        validate(self._values())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = NodeStats()
        self._cause_log = CauseLog()
        self._lock = threading.Lock()  # guards the camera_info history
        self._camera_infos: StampedHistory[CameraInfoEntry] = StampedHistory(CAMERA_INFO_HISTORY)
        self._pipeline: ReconstructionPipeline | None = None
        self._slot: FrameSlot | None = None
        self._worker: threading.Thread | None = None
        self._sync: TimeSynchronizer | None = None
        self._sync_dropped: tuple[int, ...] = ()
        self._params: dict[str, object] = {}
        self._subscriptions_made: list = []
        self._publishers_made: dict = {}
        self._diagnostics_timer = None
        self._state = 'unconfigured'
        self._activated_s = 0.0
        self._depth_seen = False

    # ---- parameters ------------------------------------------------------------------------------------------
    def _values(self) -> dict[str, object]:
        values = {}
        for spec in PARAMETERS:
            try:
                values[spec.name] = self.get_parameter(spec.name).value
            except ParameterUninitializedException:
                values[spec.name] = []
        return values

    def _on_set_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        try:
            validate({**self._values(), **{p.name: p.value for p in changed}})
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self._values()
        backend = None
        try:
            model_path = resolve_model(p['model_path'])
            contract = load_contract(model_path)
            settings = PipelineSettings(
                min_score=p['min_score'], max_objects=p['max_objects'], class_map=parse_class_map(p['class_map']),
                unknown_class=p['unknown_class'],
                crop_padding=None if p['crop_padding'] < 0 else p['crop_padding'], placement=p['placement'],
                depth_fit=p['depth_fit'], output_cloud=p['output_cloud'],
                depth=geometry.DepthWindow(roi_fraction=p['depth_roi_fraction'], min_depth_m=p['min_depth_m'],
                                           max_depth_m=p['max_depth_m'],
                                           min_valid_fraction=p['min_valid_depth_fraction']),
                prior=geometry.PlacementPrior(box_fill=p['placement_box_fill'],
                                              centre_offset=p['placement_centre_offset']))
            backend = create_backend(model_path, p['backend'], max_batch=p['max_batch'],
                                     engine_dir=p['engine_dir'] or None, threads=p['cpu_threads'],
                                     precision=p['precision'])
            self._pipeline = ReconstructionPipeline(backend, contract, settings)
        except Exception as exc:  # anything that stops the model from loading: say what, stay unconfigured
            if backend is not None:
                backend.close()
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        if contract.output_frame == 'canonical':
            self.get_logger().warning(
                f'model {contract.name} predicts shapes in a canonical object frame: their orientation in the '
                f'camera frame is unknown, so objects are placed by centre and scale only (axes = optical axes)')
        if self._pipeline.max_objects < p['max_objects']:
            self.get_logger().warning(
                f'max_objects {p["max_objects"]} lowered to {self._pipeline.max_objects}: more clouds of '
                f'{contract.num_points} points would exceed the {output_guard.MAX_CLOUD_BYTES // 2**20} MiB a '
                f'published cloud may hold')
        self._params = p
        self._publishers_made = {
            'points': self.create_publisher(PointCloud2, POINTS_TOPIC, OUTPUT_QOS),
            'objects': self.create_publisher(Detection3DArray, OBJECTS_TOPIC, OUTPUT_QOS),
            'diagnostics': self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)}
        self._diagnostics_timer = self.create_timer(p['diagnostics_period_s'], self._publish_diagnostics)
        self._slot = FrameSlot()
        self._worker = threading.Thread(target=self._work, name='reconstruct_worker', daemon=True)
        self._worker.start()
        self._state = 'inactive'
        self.get_logger().info(
            f'configured: model {contract.name} from {model_path} ({contract.output_frame} frame, '
            f'{contract.num_points} points), '
            f'backend {backend.name}, placement {p["placement"]}, depth {"on" if p["use_depth"] else "off"}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self._params
        image_qos = self._input_qos(p['image_reliability'])
        detections_qos = self._input_qos(p['detections_reliability'])
        self._sync = TimeSynchronizer(3 if p['use_depth'] else 2, queue_size=p['queue_size'], slop_s=p['sync_slop_s'])
        self._sync_dropped = self._sync.dropped
        self._subscriptions_made = [
            self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, image_qos),
            self.create_subscription(Image, 'image', lambda msg: self._on_input(IMAGE, msg), image_qos),
            self.create_subscription(Detection2DArray, 'detections', lambda msg: self._on_input(DETECTIONS, msg),
                                     detections_qos)]
        if p['use_depth']:
            self._subscriptions_made.append(
                self.create_subscription(Image, 'depth', lambda msg: self._on_input(DEPTH, msg), image_qos))
        self._state = 'active'
        self._activated_s, self._depth_seen = time.monotonic(), False
        topics = ', '.join(s.topic_name for s in self._subscriptions_made)
        self.get_logger().info(f'active: {topics} -> {self._publishers_made["points"].topic_name}, '
                               f'{self._publishers_made["objects"].topic_name}')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._state = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._unsubscribe()
        self._release()
        super().destroy_node()

    def _input_qos(self, reliability: str) -> QoSProfile:
        qos = QoSProfile(history=qos_profile_sensor_data.history, depth=qos_profile_sensor_data.depth,
                         durability=qos_profile_sensor_data.durability)
        qos.reliability = ReliabilityPolicy.RELIABLE if reliability == 'reliable' else ReliabilityPolicy.BEST_EFFORT
        return qos

    def _unsubscribe(self) -> None:
        for subscription in self._subscriptions_made:
            self.destroy_subscription(subscription)
        self._subscriptions_made = []
        self._sync = None
        if self._slot is not None:
            self._slot.clear()

    def _release(self) -> None:
        """Stop the worker (after its current frame), free the backend, remove publishers and the timer."""
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join()
        if self._pipeline is not None:
            self._pipeline.backend.close()
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        for publisher in self._publishers_made.values():
            self.destroy_publisher(publisher)
        self._slot, self._worker, self._pipeline, self._diagnostics_timer = None, None, None, None
        self._publishers_made = {}
        self._state = 'unconfigured'

    # ---- callbacks (executor thread): match only ------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            stamp = stamp_to_ns(msg.header.stamp)
        except ValueError as exc:
            self._report('bad_stamp', f'camera_info ignored: {exc}')
            return
        try:  # validated on arrival (9 numbers), so the frame finds a usable one
            entry: CameraInfoEntry = camera_info_to_intrinsics(msg)
        except ValueError as exc:
            entry = BadCameraInfo(str(exc))
            self._report('bad_camera_info', f'{exc}; frames with this stamp are skipped')
        with self._lock:
            self._camera_infos.add(stamp, entry)

    def _on_input(self, stream: int, msg: Image | Detection2DArray) -> None:
        sync, slot = self._sync, self._slot
        if sync is None or slot is None:
            return  # deactivated while the message was queued
        self._depth_seen = self._depth_seen or stream == DEPTH
        try:
            stamp = stamp_to_ns(msg.header.stamp)
        except ValueError as exc:
            self._report('bad_stamp', f'{("image", "detections", "depth")[stream]} message ignored: {exc}')
            return
        matched = sync.add(stream, stamp, msg)
        dropped = sync.dropped
        lost_detections = dropped[DETECTIONS] - self._sync_dropped[DETECTIONS]
        self.stats.count('dropped_sync', sum(dropped) - sum(self._sync_dropped))
        self._sync_dropped = dropped
        if lost_detections:
            self._report('unmatched_detections', f'{lost_detections} detection array(s) found no image with the '
                         f'same stamp (sync_slop_s={self._params["sync_slop_s"]}): does the detector copy the image '
                         f'header, and do image and detections arrive on the configured topics and QoS?')
        if matched is None:
            return
        with self._lock:
            camera_info = self._camera_infos.match(stamp, lambda entry: isinstance(entry, CameraIntrinsics))
        depth = matched[DEPTH] if len(matched) > DEPTH else None
        self.stats.count('matched')
        if slot.put(Frame(matched[IMAGE], matched[DETECTIONS], depth, camera_info, time.monotonic())):
            self.stats.count('dropped_stale')

    # ---- worker thread: convert, reconstruct, publish --------------------------------------------------------
    def _work(self) -> None:
        slot, pipeline, publishers = self._slot, self._pipeline, self._publishers_made
        while (frame := slot.take()) is not None:
            try:
                self._process(frame, pipeline, publishers)
            except Exception:  # a bug must not kill the node: report it (once per period) and take the next frame
                self._report('internal_error', f'frame failed:\n{traceback.format_exc()}', error=True)

    def _process(self, frame: Frame, pipeline: ReconstructionPipeline, publishers: dict) -> None:
        self.stats.count('processed')
        stamp = frame.image.header.stamp
        intrinsics = frame.camera_info
        if intrinsics is None:
            self._report('no_camera_info', 'no valid camera_info stamped at or before the frame: frames are dropped '
                         f'until one arrives on {self.resolve_topic_name("camera_info")}')
            return
        if isinstance(intrinsics, BadCameraInfo):
            self.stats.count('dropped_bad_camera_info')  # the cause was counted and logged when it arrived
            return
        try:
            rgb = image_to_rgb(frame.image)
        except ValueError as exc:
            self._report('bad_image', f'frame dropped: {exc}')
            return
        if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
            self._report('size_mismatch', f'image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info says '
                         f'{intrinsics.width}x{intrinsics.height}: frame dropped (intrinsics of another stream?)')
            return
        depth = None
        if frame.depth is not None:
            try:
                depth = depth_to_metres(frame.depth, self._params['depth_scale_m'])
            except ValueError as exc:
                self._report('bad_depth', f'depth ignored, using the size prior: {exc}')
            if depth is not None and depth.shape != rgb.shape[:2]:
                self._report('depth_size_mismatch', f'depth is {depth.shape[1]}x{depth.shape[0]}, image '
                             f'{rgb.shape[1]}x{rgb.shape[0]}: depth ignored (not registered to the image?)')
                depth = None
        detections = detections_to_arrays(frame.detections)
        if not detections.class_ids:
            self._report('empty_detections', 'an empty detection array is answered with an empty cloud',
                         level='info')
        issues = []
        objects = pipeline.process(rgb, detections.boxes, detections.class_ids, detections.scores, intrinsics.k,
                                   depth, issues)
        for issue in issues:
            self._report(issue.cause, f'detection {issue.detection_index}: {issue.detail}')
        header = Header(stamp=stamp, frame_id=self._params['output_frame'] or frame.image.header.frame_id)
        cloud, objects_msg = objects_to_messages(objects, detections.ids, header)
        publishers['points'].publish(cloud)
        publishers['objects'].publish(objects_msg)
        age_s = (self.get_clock().now().nanoseconds - stamp_to_ns(stamp)) * 1e-9
        self.stats.frame_done(time.monotonic() - frame.matched_s, age_s, [o.placement.mode for o in objects])
        self.stats.fits_done([(o.fit_rms_m, o.visible_points) for o in objects if o.placement.mode == 'fit'])

    def _report(self, cause: str, text: str, level: str = 'warning', error: bool = False) -> None:
        """Count an input problem; log it the first time, then at most once per CauseLog period with a count."""
        self.stats.issue(cause)
        log, suppressed = self._cause_log.should_log(cause)
        if not log:
            return
        more = f' ({suppressed} more since the last report)' if suppressed else ''
        # Message-derived parts are already shortened where they are quoted; this bounds the line whatever it holds.
        line = (f'[{cause}] {printable(text, LINE_CHARS, keep_newlines=error)}{more}; repeats are counted on '
                f'/diagnostics, logged at most once a minute')
        # One call per severity: rclpy refuses a second severity from the same call site.
        if error:
            self.get_logger().error(line)
        elif level == 'info':
            self.get_logger().info(line)
        else:
            self.get_logger().warning(line)

    def _publish_diagnostics(self) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            return
        waited_s = time.monotonic() - self._activated_s
        if self._state == 'active' and self._params['use_depth'] and not self._depth_seen and waited_s > DEPTH_WAIT_S:
            # Frames wait for a depth partner, so without one the node publishes nothing: say why, every period.
            self._report('no_depth', f'use_depth is true but no depth image arrived on '
                         f'{self.resolve_topic_name("depth")} in {waited_s:.0f} s: nothing is published until one '
                         f'does (remap depth:=<topic>, check its QoS, or set use_depth:=false)')
        context = {'state': self._state, 'backend': pipeline.backend.name, 'model': pipeline.contract.name,
                   'output_frame': pipeline.contract.output_frame, 'placement_policy': self._params['placement'],
                   'use_depth': str(self._params['use_depth']).lower(),
                   'depth_fit': str(self._params['depth_fit']).lower(), 'output_cloud': self._params['output_cloud']}
        header = Header(stamp=self.get_clock().now().to_msg())
        self._publishers_made['diagnostics'].publish(diagnostic_array(
            self.stats.snapshot(), f'{self.get_fully_qualified_name()}: reconstruction', pipeline.backend.name,
            context, header))


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:
        node = ReconstructNode()
        if node.get_parameter('autostart').value:
            for name, trigger in (('configure', node.trigger_configure), ('activate', node.trigger_activate)):
                if trigger() != TransitionCallbackReturn.SUCCESS:
                    logger.fatal(f'autostart: {name} failed (see the error above); exiting')
                    return 1
        rclpy.spin(node)
    except (InvalidParameterValueException, ParameterError) as exc:
        # An out-of-range or invalid -p/--params-file value: say which, and exit non-zero instead of a traceback.
        logger.fatal(str(exc))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
