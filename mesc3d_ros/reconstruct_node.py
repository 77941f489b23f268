"""
``reconstruct_node``: camera images + 2D detections in, one metric point cloud per frame out.

A thin lifecycle adapter over :class:`mesc3d_ros.pipeline.ReconstructionPipeline`; docs/node.md is the manual. What
needs no ROS lives beside it: the parameters (``node_params.NodeParams``), the hand-over to the worker
(``frame_slot``), the frame's conversions and checks (``frame_inputs``) and the output messages
(``object_messages``).

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
from collections.abc import Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray

from mesc3d_ros.conversions import stamp_to_ns
from mesc3d_ros.diagnostics import CauseLog, NodeStats, diagnostic_array
from mesc3d_ros.frame_inputs import INFO_CAUSES, frame_inputs
from mesc3d_ros.frame_slot import BadCameraInfo, CameraInfoHistory, Frame, FrameSlot
from mesc3d_ros.node_params import PARAMETERS, NodeParams, ParameterError
from mesc3d_ros.object_messages import objects_to_messages
from mesc3d_ros.pipeline import ReconstructionPipeline
from mesc3d_ros.sync import TimeSynchronizer

NODE_NAME = 'reconstruct_node'
IMAGE, DETECTIONS, DEPTH = 0, 1, 2  # stream indices in the synchroniser
INPUT_TOPICS = ('image', 'detections', 'camera_info', 'depth')  # relative: remap them
POINTS_TOPIC, OBJECTS_TOPIC, DIAGNOSTICS_TOPIC = 'mesc3d/points', 'mesc3d/objects', '/diagnostics'
OUTPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # what RViz subscribes with by default
DEPTH_WAIT_S = 5.0
"""With use_depth, seconds after activation without any depth image before it is reported (log + /diagnostics)."""


class ReconstructNode(LifecycleNode):
    """
    configure: load and check the model; activate: subscribe; deactivate: unsubscribe; cleanup: free the model.

    The outputs are lifecycle publishers: they publish only while the node is active, whatever the worker does.
    """

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        for spec in PARAMETERS:
            default = Parameter.Type.STRING_ARRAY if spec.default is None else spec.default
            self.declare_parameter(spec.name, default, spec.descriptor())
        self._read_params()  # an invalid value given at start ends the process (main)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = NodeStats()
        self._cause_log = CauseLog()
        self._camera_infos = CameraInfoHistory()
        self._params: NodeParams | None = None  # read at configure
        self._pipeline: ReconstructionPipeline | None = None
        self._slot: FrameSlot | None = None
        self._worker: threading.Thread | None = None
        self._sync: TimeSynchronizer | None = None
        self._sync_dropped: tuple[int, ...] = ()
        self._subscriptions_made: list = []
        self._outputs: dict = {}
        """'points' and 'objects': lifecycle publishers, publishing only while the node is active."""
        self._diagnostics_publisher = None
        self._diagnostics_timer = None
        self._activated_s = 0.0
        self._depth_seen = False

    # ---- parameters ------------------------------------------------------------------------------------------
    def _read_params(self, changed: Sequence[Parameter] = ()) -> NodeParams:
        """Read the declared values with ``changed`` applied, validated (ParameterError)."""
        values = {}
        for spec in PARAMETERS:
            try:
                values[spec.name] = self.get_parameter(spec.name).value
            except ParameterUninitializedException:
                values[spec.name] = None
        values.update({parameter.name: parameter.value for parameter in changed})
        return NodeParams.from_values(values)

    def _on_set_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        try:
            self._read_params(changed)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = self._read_params()
        try:
            self._pipeline, model_path = params.open_pipeline()
        except Exception as exc:  # anything that stops the model from loading: say what, stay unconfigured
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        contract, backend = self._pipeline.contract, self._pipeline.backend
        for note in self._pipeline.limitations():
            self.get_logger().warning(note)
        self._params = params
        self._outputs = {'points': self.create_lifecycle_publisher(PointCloud2, POINTS_TOPIC, OUTPUT_QOS),
                         'objects': self.create_lifecycle_publisher(Detection3DArray, OBJECTS_TOPIC, OUTPUT_QOS)}
        # A plain publisher: an inactive node still reports its state.
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._diagnostics_timer = self.create_timer(params.diagnostics_period_s, self._publish_diagnostics)
        self._slot = FrameSlot()
        self._worker = threading.Thread(target=self._work, name='reconstruct_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'configured: model {contract.name} from {model_path} ({contract.output_frame} frame, '
            f'{contract.num_points} points), '
            f'backend {backend.name}, placement {params.placement}, depth {"on" if params.use_depth else "off"}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = self._params
        image_qos = self._input_qos(params.image_reliability)
        detections_qos = self._input_qos(params.detections_reliability)
        self._sync = TimeSynchronizer(3 if params.use_depth else 2, queue_size=params.queue_size,
                                      slop_s=params.sync_slop_s)
        self._sync_dropped = self._sync.dropped
        self._subscriptions_made = [
            self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, image_qos),
            self.create_subscription(Image, 'image', lambda msg: self._on_input(IMAGE, msg), image_qos),
            self.create_subscription(Detection2DArray, 'detections', lambda msg: self._on_input(DETECTIONS, msg),
                                     detections_qos)]
        if params.use_depth:
            self._subscriptions_made.append(
                self.create_subscription(Image, 'depth', lambda msg: self._on_input(DEPTH, msg), image_qos))
        self._activated_s, self._depth_seen = time.monotonic(), False
        topics = ', '.join(s.topic_name for s in self._subscriptions_made)
        self.get_logger().info(f'active: {topics} -> {self._outputs["points"].topic_name}, '
                               f'{self._outputs["objects"].topic_name}')
        return super().on_activate(state)  # activates the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        return super().on_deactivate(state)  # deactivates the lifecycle publishers

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
            self._pipeline.close()
            self._pipeline.backend.close()
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        if self._diagnostics_publisher is not None:
            self.destroy_publisher(self._diagnostics_publisher)
        self._slot, self._worker, self._pipeline, self._diagnostics_timer = None, None, None, None
        self._outputs, self._diagnostics_publisher = {}, None

    # ---- callbacks (executor thread): match only ------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            stamp = stamp_to_ns(msg.header.stamp)
        except ValueError as exc:
            self._report('bad_stamp', f'camera_info ignored: {exc}')
            return
        problem = self._camera_infos.add(stamp, msg)  # validated on arrival, so the frame finds a usable one
        if problem is not None:
            self._report('bad_camera_info', f'{problem}; frames with this stamp are skipped')

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
                         f'same stamp (sync_slop_s={self._params.sync_slop_s}): does the detector copy the image '
                         f'header, and do image and detections arrive on the configured topics and QoS?')
        if matched is None:
            return
        camera_info = self._camera_infos.match(stamp)
        depth = matched[DEPTH] if len(matched) > DEPTH else None
        self.stats.count('matched')
        if slot.put(Frame(matched[IMAGE], matched[DETECTIONS], depth, camera_info, time.monotonic())):
            self.stats.count('dropped_stale')

    # ---- worker thread: convert, reconstruct, publish --------------------------------------------------------
    def _work(self) -> None:
        slot, pipeline, outputs = self._slot, self._pipeline, self._outputs
        while (frame := slot.take()) is not None:
            try:
                self._process(frame, pipeline, outputs)
            except Exception:  # a bug must not kill the node: report it (once per period) and take the next frame
                self._report('internal_error', f'frame failed:\n{traceback.format_exc()}', error=True)

    def _process(self, frame: Frame, pipeline: ReconstructionPipeline, outputs: dict) -> None:
        self.stats.count('processed')
        if isinstance(frame.camera_info, BadCameraInfo):
            self.stats.count('dropped_bad_camera_info')  # the cause was counted and logged when it arrived
            return
        inputs, issues = frame_inputs(frame, self._params.depth_scale_m)
        objects = []
        if inputs is not None:
            objects, object_issues = pipeline.process(inputs.rgb, inputs.detections.boxes, inputs.detections.class_ids,
                                                      inputs.detections.scores, inputs.intrinsics.k, inputs.depth)
            issues += object_issues
        for issue in issues:
            where = f'detection {issue.detection_index}: ' if issue.detection_index >= 0 else ''
            self._report(issue.cause, where + issue.detail, level='info' if issue.cause in INFO_CAUSES else 'warning')
        if inputs is None:
            return
        stamp = frame.image.header.stamp
        header = Header(stamp=stamp, frame_id=self._params.output_frame or frame.image.header.frame_id)
        cloud, objects_msg = objects_to_messages(objects, inputs.detections.ids, header)
        outputs['points'].publish(cloud)  # dropped by the lifecycle publisher if deactivated meanwhile
        outputs['objects'].publish(objects_msg)
        age_s = (self.get_clock().now().nanoseconds - stamp_to_ns(stamp)) * 1e-9
        self.stats.frame_done(time.monotonic() - frame.matched_s, age_s, [o.placement.mode for o in objects])
        self.stats.fits_done([(o.fit_rms_m, o.visible_points) for o in objects if o.placement.mode == 'fit'])

    def _report(self, cause: str, text: str, level: str = 'warning', error: bool = False) -> None:
        """Count an input problem; log it the first time, then at most once per CauseLog period with a count."""
        self.stats.issue(cause)
        line = self._cause_log.line(cause, text, keep_newlines=error)
        if line is None:
            return
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
        params, active = self._params, self._outputs['points'].is_activated
        waited_s = time.monotonic() - self._activated_s
        if active and params.use_depth and not self._depth_seen and waited_s > DEPTH_WAIT_S:
            # Frames wait for a depth partner, so without one the node publishes nothing: say why, every period.
            self._report('no_depth', f'use_depth is true but no depth image arrived on '
                         f'{self.resolve_topic_name("depth")} in {waited_s:.0f} s: nothing is published until one '
                         f'does (remap depth:=<topic>, check its QoS, or set use_depth:=false)')
        context = {'state': 'active' if active else 'inactive', 'backend': pipeline.backend.name,
                   'model': pipeline.contract.name, 'output_frame': pipeline.contract.output_frame,
                   'placement_policy': params.placement, 'use_depth': str(params.use_depth).lower(),
                   'depth_fit': str(params.depth_fit).lower(), 'output_cloud': params.output_cloud}
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics_publisher.publish(diagnostic_array(
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
