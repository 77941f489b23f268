"""
Fuzz: hypothesis generates malformed messages that are published at the live node, which must stay alive.

``python -m mesc3d_training.reliability fuzz``: malformed Image, Detection2DArray and CameraInfo messages
(impossible sizes and steps, unknown encodings, NaN/inf/inverted/off-image boxes, huge detection counts,
uncalibrated or non-finite K, ...), interleaved with valid partners so each one reaches the code it targets. The node
must stay alive throughout, and answer a good frame correctly afterwards. Reported: messages sent per kind, whether
the node lived, the good frame's answer, and the node's log lines (it logs each cause once, then counts).
"""

from __future__ import annotations

import time
from datetime import date

from mesc3d_training.demo.processes import (NODE_NAME, REMAPS, Child, DemoError, node_command, start_child,
                                            stopped_on_exit)
from mesc3d_training.reliability.run import MONITOR_NODE, GoodFrame, RunContext, good_frame, spin_until


def fuzz_strategy(good: GoodFrame):
    """Cases (kind, image, detections, camera_info); None = the good frame's message. Each case breaks one thing."""
    from hypothesis import strategies as st
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose)

    from mesc3d_ros.conversions import _box_center  # the one place that knows where vision_msgs keeps the centre

    wild = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-2000, 2000),
                     st.sampled_from([0.0, -1.0, 1e308, float('nan'), float('inf')]))
    encoding = st.sampled_from(['rgb8', 'bgr8', 'rgba8', 'mono8', 'mono16', '16UC1', '32FC1', 'yuv422', 'bayer_rggb8',
                                '', 'RGB8', '8UC3', 'jpeg'])

    @st.composite
    def bad_image(draw):
        width, height = draw(st.integers(0, 1280)), draw(st.integers(0, 960))
        step = draw(st.one_of(st.just(width * 3), st.integers(0, 8192)))
        size = draw(st.one_of(st.just(step * height), st.integers(0, 4_000_000)))
        return Image(header=good.image.header, width=width, height=height, encoding=draw(encoding),
                     is_bigendian=draw(st.integers(0, 1)), step=step, data=bytes(size))

    @st.composite
    def bad_detections(draw):
        detections = []
        for _ in range(draw(st.integers(0, 64))):
            bbox = BoundingBox2D(size_x=draw(wild), size_y=draw(wild))
            centre = _box_center(bbox)
            centre.x, centre.y = draw(wild), draw(wild)
            bbox.center.theta = draw(wild)
            results = [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(
                class_id=draw(st.one_of(st.text(max_size=12), st.sampled_from(['mug', 'bottle', 'chair']))),
                score=draw(wild))) for _ in range(draw(st.integers(0, 3)))]
            detections.append(Detection2D(bbox=bbox, results=results, id=draw(st.text(max_size=8))))
        return Detection2DArray(detections=detections)

    @st.composite
    def bad_camera_info(draw):
        k = draw(st.one_of(st.just([0.0] * 9), st.lists(wild, min_size=9, max_size=9)))
        return CameraInfo(width=draw(st.integers(0, 4000)), height=draw(st.integers(0, 4000)), k=k,
                          d=draw(st.lists(wild, max_size=14)), distortion_model=draw(st.text(max_size=16)))

    return st.one_of(
        st.tuples(st.just('image'), bad_image(), st.none(), st.none()),
        st.tuples(st.just('detections'), st.none(), bad_detections(), st.none()),
        st.tuples(st.just('camera_info'), st.none(), st.none(), bad_camera_info()),
        st.tuples(st.just('unmatched_detections'), st.just('skip'), st.one_of(st.none(), bad_detections()), st.none()),
    )


def fuzz(ctx: RunContext, examples: int, seed: int) -> dict:
    """Publish ``examples`` hypothesis-generated malformed cases at the live node, then one good frame."""
    import rclpy
    from hypothesis import HealthCheck, given, settings
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from vision_msgs.msg import Detection2DArray

    from mesc3d_ros.conversions import stamp_to_ns

    good = good_frame(ctx, seed)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    monitor = rclpy.create_node(MONITOR_NODE)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publish = {'image': monitor.create_publisher(Image, REMAPS['image'], qos).publish,
               'detections': monitor.create_publisher(Detection2DArray, REMAPS['detections'], qos).publish,
               'camera_info': monitor.create_publisher(CameraInfo, REMAPS['camera_info'], qos).publish}
    clouds: dict[int, int] = {}  # stamp ns -> points
    monitor.create_subscription(PointCloud2, '/mesc3d/points',
                                lambda msg: clouds.__setitem__(stamp_to_ns(msg.header.stamp), msg.width), 10)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    sent: dict[str, int] = {}
    children: list[Child] = []

    def send(image, detections, camera_info) -> int:
        stamp = monitor.get_clock().now()
        for message in (camera_info, image, detections):
            if message is not None:
                message.header.stamp = stamp.to_msg()
        publish['camera_info'](camera_info)
        if image is not None:
            publish['image'](image)
        publish['detections'](detections)
        return stamp.nanoseconds

    def good_answer(timeout_s: float) -> int | None:
        """Points of the node's answer to a good frame (re-sent each second), or None."""
        stamps: list[int] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stamps.append(send(good.image, good.detections, good.camera_info))
            if spin_until(executor, lambda: any(s in clouds for s in stamps), 1.0, node):
                return next(clouds[s] for s in stamps if s in clouds)
        return None

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(case=fuzz_strategy(good))
    def publish_case(case) -> None:
        kind, image, detections, camera_info = case
        sent[kind] = sent.get(kind, 0) + 1
        if image == 'skip':  # detections whose image never comes
            image = None
        elif image is None:
            image = good.image
        send(image, detections if detections is not None else good.detections,
             camera_info if camera_info is not None else good.camera_info)
        spin_until(executor, lambda: False, 0.02, node)  # ~50 messages/s; raises if the node died
        # Back to a good camera_info so that the next case tests its own fault, not this one's.
        publish['camera_info'](good.camera_info)

    with stopped_on_exit(children, monitor):
        node = start_child(NODE_NAME, node_command(ctx.contract_path, ctx.params_file, 'onnxruntime',
                                                   use_depth=False), ctx.out_dir / 'logs')
        children.append(node)
        before = good_answer(120.0)
        if before is None:
            raise DemoError(f'the node did not answer a good frame before fuzzing; see {node.log_path}')
        started = time.monotonic()
        crash = ''
        try:
            publish_case()
        except DemoError as exc:
            crash = str(exc)
        fuzz_s = time.monotonic() - started
        after = None if crash else good_answer(30.0)
        alive = node.popen.poll() is None
    log = node.log_path.read_text(errors='replace').splitlines()
    return {
        'kind': 'fuzz', 'date': date.today().isoformat(), 'machine': ctx.machine(), 'model': ctx.model(),
        'examples': examples, 'sent_by_kind': sent, 'fuzz_seconds': round(fuzz_s, 1), 'node_alive_after': alive,
        'crash': crash, 'good_frame_objects': good.num_objects, 'good_frame_points_before': before,
        'good_frame_points_after': after, 'node_exit_status_after_sigint': node.popen.returncode,
        'node_log_lines': len(log), 'node_error_lines': [line for line in log if '[ERROR]' in line][:20],
        'node_warning_lines': sum('[WARN]' in line for line in log),
    }


def fuzz_markdown(result: dict, command: str) -> str:
    kinds = ', '.join(f'{count} {kind}' for kind, count in sorted(result['sent_by_kind'].items()))
    answered = result['good_frame_points_after']
    return '\n'.join([
        f'Fuzz, measured {result["date"]} with `{command}`.',
        '',
        f'- Machine: {result["machine"]}.',
        f'- Model: `{result["model"]}`, backend onnxruntime; the node runs with `config/reconstruct.yaml`.',
        f'- {result["examples"]} hypothesis-generated malformed cases in {result["fuzz_seconds"]:g} s: {kinds} '
        '(impossible sizes/steps and unknown encodings; NaN/inf/inverted/off-image boxes, up to 64 detections, '
        'junk class ids and scores; all-zero or non-finite K, zero or odd sizes; detections whose image never '
        'comes). Each case breaks one message of a frame; the others are valid.',
        f'- Node alive afterwards: **{"yes" if result["node_alive_after"] else "no"}**'
        + (f' (crash: {result["crash"]})' if result['crash'] else '') + '; '
        f'a good frame with {result["good_frame_objects"]} objects was answered '
        + (f'with a {answered}-point cloud (before fuzzing: {result["good_frame_points_before"]} points)'
           if answered else '**not at all**') + '; '
        f'exit status on SIGINT {result["node_exit_status_after_sigint"]}.',
        f'- Node log: {result["node_log_lines"]} lines for all of it ({result["node_warning_lines"]} warnings, '
        f'{len(result["node_error_lines"])} errors), one line per cause and then counts, not one per message.',
    ])
