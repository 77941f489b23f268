"""
Reliability runs of the live node (benchmarks, not tests): a soak and a fuzz, results in docs/benchmarks.md.

``python -m mesc3d_training.reliability soak``: the scene publisher plays 5 test-split objects per frame at 30 Hz
into ``reconstruct_node`` (CPU backend) for ``--duration-s`` (the issue asks for 10 minutes). Reported: frames
sent, clouds received, frames the node dropped, end-to-end latency percentiles (image stamp -> cloud received),
the node's resident memory (RSS) over time, and whether it survived and shut down cleanly.

``python -m mesc3d_training.attack`` is the mixed adversarial campaign of issue 17 (extreme intrinsics, depth edge
cases, junk scores, 500 boxes, 1 MB strings, bad stamps) with its output, latency, memory and log-volume checks.

``python -m mesc3d_training.reliability fuzz``: hypothesis generates malformed Image, Detection2DArray and
CameraInfo messages (impossible sizes and steps, unknown encodings, NaN/inf/inverted/off-image boxes, huge
detection counts, uncalibrated or non-finite K, ...) that are published at the live node, interleaved with valid
partners so each one reaches the code it targets. The node must stay alive throughout, and answer a good frame
correctly afterwards. Reported: messages sent per kind, whether the node lived, the good frame's answer, and the
node's log lines (it logs each cause once, then counts).

Both reuse the demo's pieces: ``demo.ensure_exported`` for the model, ``demo.start_child`` / ``node_command`` for
the node process, ``scene_publisher`` for the frames. ``--write-docs`` replaces this tool's block in
docs/benchmarks.md (between ``<!-- reliability:KIND:start -->`` and ``…:end -->``, ``mesc3d_ros.markdown_blocks``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import psutil

from mesc3d_ros.markdown_blocks import replace_block
from mesc3d_ros.ros_env import REPO_ROOT, apply_ros_environment
from mesc3d_training import SHIPPED_MODEL
from mesc3d_training.demo import (NODE_NAME, PARAMS_FILE, REMAPS, Child, DemoError, cpu_model, ensure_exported,
                                  interrupt_on_sigterm, node_command, start_child)

LOGGER = logging.getLogger(__name__)

BENCHMARKS_DOC = REPO_ROOT / 'docs' / 'benchmarks.md'
MONITOR_NODE = 'mesc3d_reliability_monitor'
SMALL_CATEGORIES = {'mug', 'bottle', 'bowl', 'toy', 'electronics', 'kitchen_appliance', 'vase', 'box'}
"""Graspable categories: five of them fit on one table in view."""


@dataclass(frozen=True)
class RunContext:
    """What every run needs: the model, where to write, which node parameters."""

    contract_path: Path
    out_dir: Path
    params_file: Path

    def model(self) -> str:
        """Return the contract path as a reader of the docs can find it (relative to the repository when inside it)."""
        path = self.contract_path.resolve()
        return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)

    def machine(self) -> str:
        load = ', '.join(f'{v:.1f}' for v in os.getloadavg())
        return (f'{cpu_model()}, {os.cpu_count()} cores, load average {load} at the '
                f'end (the machine is shared), Python {platform.python_version()}')


def _spin_until(executor, predicate, timeout_s: float, node: Child | None = None) -> bool:
    """Spin until ``predicate()``; False on timeout. Raises DemoError if ``node`` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        if node is not None and node.popen.poll() is not None:
            raise DemoError(f'{NODE_NAME} exited with status {node.popen.returncode}; end of its log:\n{node.tail()}')
        executor.spin_once(timeout_sec=0.05)
    return True


# ---- soak ---------------------------------------------------------------------------------------------------------

def soak(ctx: RunContext, duration_s: float, rate_hz: float, objects_per_frame: int, seed: int) -> dict:
    """Stream ``objects_per_frame`` objects at ``rate_hz`` for ``duration_s`` into the node; measure it."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import PointCloud2

    from mesc3d_ros.conversions import stamp_to_ns
    from mesc3d_training import demo_scenes, scene_publisher

    scenes_path, stamps_path = ctx.out_dir / 'soak_scenes.npz', ctx.out_dir / 'soak_stamps.json'
    settings = demo_scenes.SceneSettings(min_objects=objects_per_frame, max_objects=objects_per_frame,
                                         min_visible_fraction=0.6, layout_tries=30, seed=seed)
    pool = scene_publisher.load_demo_objects(SMALL_CATEGORIES & scene_publisher.demo_categories(ctx.contract_path),
                                             count=12, seed=seed)
    frames = round(duration_s * rate_hz)
    # 12 scenes of one second each, played round and round: memory must not grow with the number of distinct frames.
    demo_scenes.save_sequence(demo_scenes.render_sequence(
        pool, settings, num_scenes=12, rate_hz=rate_hz, frames_per_scene=round(rate_hz), num_frames=frames),
        scenes_path)
    children: list[Child] = []
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    monitor = rclpy.create_node(MONITOR_NODE)
    clouds: list[tuple[int, int, int]] = []  # (stamp ns, receive ns, points)
    diagnostics: list[DiagnosticArray] = []
    monitor.create_subscription(PointCloud2, '/mesc3d/points', lambda msg: clouds.append(
        (stamp_to_ns(msg.header.stamp), time.time_ns(), msg.width)), 10)
    monitor.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    rss: list[tuple[float, int]] = []  # (seconds since the stream started, bytes)
    exit_status, crashed = None, False
    try:
        node = start_child(NODE_NAME, node_command(ctx.contract_path, ctx.params_file, 'onnxruntime'),
                           ctx.out_dir / 'logs')
        publisher = start_child('scene_publisher', [
            sys.executable, '-m', 'mesc3d_training.scene_publisher', '--replay', '--scenes', str(scenes_path),
            '--stamps-out', str(stamps_path), '--wait-for', NODE_NAME],
            ctx.out_dir / 'logs')
        children = [node, publisher]
        node_process = psutil.Process(node.popen.pid)
        _spin_until(executor, lambda: clouds or publisher.popen.poll() is not None, 180.0, node)
        if not clouds:
            raise DemoError(f'no cloud within 180 s of the start; end of {publisher.log_path}:\n{publisher.tail()}'
                            f'\n  and of {node.log_path}:\n{node.tail()}')
        started = time.monotonic()
        next_sample = started
        try:
            while publisher.popen.poll() is None:
                _spin_until(executor, lambda: time.monotonic() >= next_sample, 5.0, node)
                rss.append((time.monotonic() - started, node_process.memory_info().rss))
                next_sample += 5.0
            _spin_until(executor, lambda: False, 3.0, node)  # the node finishes the frame it is on
            rss.append((time.monotonic() - started, node_process.memory_info().rss))
        except DemoError as exc:  # the node died: that is the result, not a failure of the tool
            LOGGER.error('%s', exc)
            crashed = True
        node.stop()
        exit_status = node.popen.returncode
    finally:
        for child in reversed(children):
            child.stop()
        monitor.destroy_node()
        rclpy.try_shutdown()
    sent = json.loads(stamps_path.read_text())['frames']
    stamps = {entry['stamp_ns'] for entry in sent}
    matched = [(stamp, receive, width) for stamp, receive, width in clouds if stamp in stamps]
    latency_ms = np.array([(receive - stamp) / 1e6 for stamp, receive, _ in matched])
    last = {kv.key: kv.value for status in diagnostics[-1].status for kv in status.values} if diagnostics else {}
    seconds, memory = np.array([t for t, _ in rss]), np.array([m for _, m in rss]) / 2**20
    second_half = seconds >= seconds[-1] / 2
    slope = float(np.polyfit(seconds[second_half] / 60, memory[second_half], 1)[0]) if second_half.sum() > 2 else 0.0
    return {
        'kind': 'soak', 'date': date.today().isoformat(), 'machine': ctx.machine(), 'model': ctx.model(),
        'backend': last.get('backend', 'onnxruntime'), 'duration_s': duration_s, 'rate_hz': rate_hz,
        'objects_per_frame': objects_per_frame, 'frames_sent': len(sent), 'clouds_received': len(clouds),
        'clouds_matched': len(matched), 'frames_dropped': len(sent) - len(matched),
        'empty_clouds': sum(1 for _, _, width in matched if width == 0),
        'latency_ms': {q: float(np.percentile(latency_ms, int(q[1:]))) for q in ('p50', 'p95', 'p99')}
        | {'max': float(latency_ms.max())},
        'output_hz': len(matched) / duration_s,
        'rss_mib': {'start': float(memory[0]), 'end': float(memory[-1]), 'max': float(memory.max()),
                    'slope_second_half_mib_per_min': slope},
        'rss_series_mib': [[round(float(t), 1), round(float(m), 1)] for t, m in zip(seconds, memory)],
        'node_crashed': crashed, 'node_exit_status_after_sigint': exit_status, 'node_diagnostics': last,
    }


# ---- fuzz ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class GoodFrame:
    """A valid frame of the demo stream; its objects must come back after the fuzzing."""

    image: object
    detections: object
    camera_info: object
    num_objects: int
    depth: object
    """16UC1 millimetres, registered to ``image``."""


def _good_frame(ctx: RunContext, seed: int) -> GoodFrame:
    from std_msgs.msg import Header

    from mesc3d_training import demo_scenes, scene_publisher

    pool = scene_publisher.load_demo_objects(scene_publisher.demo_categories(ctx.contract_path), count=2, seed=seed)
    sequence = demo_scenes.render_sequence(pool, demo_scenes.SceneSettings(min_objects=2, seed=seed),
                                           num_scenes=1, rate_hz=1.0, frames_per_scene=1, num_frames=1)
    image, depth, camera_info, detections = scene_publisher.frame_messages(sequence, 0,
                                                                           Header(frame_id='fuzz_camera'))
    return GoodFrame(image, detections, camera_info, len(sequence.scenes[0].objects), depth)


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

    good = _good_frame(ctx, seed)
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
    node = None

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
            if _spin_until(executor, lambda: any(s in clouds for s in stamps), 1.0, node):
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
        _spin_until(executor, lambda: False, 0.02, node)  # ~50 messages/s; raises if the node died
        # Back to a good camera_info so that the next case tests its own fault, not this one's.
        publish['camera_info'](good.camera_info)

    try:
        node = start_child(NODE_NAME, node_command(ctx.contract_path, ctx.params_file, 'onnxruntime',
                                                   use_depth=False), ctx.out_dir / 'logs')
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
    finally:
        if node is not None:
            node.stop()
        monitor.destroy_node()
        rclpy.try_shutdown()
    log = node.log_path.read_text(errors='replace').splitlines()
    return {
        'kind': 'fuzz', 'date': date.today().isoformat(), 'machine': ctx.machine(), 'model': ctx.model(),
        'examples': examples, 'sent_by_kind': sent, 'fuzz_seconds': round(fuzz_s, 1), 'node_alive_after': alive,
        'crash': crash, 'good_frame_objects': good.num_objects, 'good_frame_points_before': before,
        'good_frame_points_after': after, 'node_exit_status_after_sigint': node.popen.returncode,
        'node_log_lines': len(log), 'node_error_lines': [line for line in log if '[ERROR]' in line][:20],
        'node_warning_lines': sum('[WARN]' in line for line in log),
    }


# ---- reporting ----------------------------------------------------------------------------------------------------

def soak_markdown(result: dict, command: str) -> str:
    latency, rss = result['latency_ms'], result['rss_mib']
    return '\n'.join([
        f'Soak, measured {result["date"]} with `{command}`.',
        '',
        f'- Machine: {result["machine"]}.',
        f'- Model: `{result["model"]}`, backend {result["backend"]}; {result["objects_per_frame"]} objects per '
        f'frame (640×480 RGB-D, test-split objects), {result["rate_hz"]:g} Hz for {result["duration_s"]:g} s.',
        '',
        '| frames sent | clouds received | frames dropped | output rate | latency p50 / p95 / p99 / max | '
        'node RSS start → end (max) | RSS slope, 2nd half | crashes | exit on SIGINT |',
        '|---:|---:|---:|---:|---|---|---:|---:|---:|',
        f'| {result["frames_sent"]} | {result["clouds_matched"]} | {result["frames_dropped"]} '
        f'({100 * result["frames_dropped"] / max(result["frames_sent"], 1):.0f} %) | {result["output_hz"]:.1f} Hz | '
        f'{latency["p50"]:.0f} / {latency["p95"]:.0f} / {latency["p99"]:.0f} / {latency["max"]:.0f} ms | '
        f'{rss["start"]:.0f} → {rss["end"]:.0f} ({rss["max"]:.0f}) MiB | '
        f'{rss["slope_second_half_mib_per_min"]:+.2f} MiB/min | {int(result["node_crashed"])} | '
        f'{result["node_exit_status_after_sigint"]} |',
        '',
        'Dropped frames are by design: the node reconstructs the newest matched frame and skips frames that arrive '
        'while it works (counted on /diagnostics). Latency = cloud received − image stamp, through DDS and the node. '
        'RSS is sampled every 5 s from the first cloud on; the slope is a least-squares fit over the second half.',
        '',
        f'Memory after warm-up: {_rss_after(result, 60.0)}',
    ])


def _rss_after(result: dict, warmup_s: float) -> str:
    """One sentence on the RSS series after ``warmup_s``: its range, against the start."""
    series = [(t, m) for t, m in result['rss_series_mib'] if t >= warmup_s]
    if not series:
        return f'the run was shorter than {warmup_s:g} s.'
    values = [m for _, m in series]
    return (f"from {warmup_s:g} s to the end ({series[-1][0]:g} s) the node's RSS stayed between {min(values):.1f} "
            f'and {max(values):.1f} MiB ({result["rss_mib"]["start"]:.1f} MiB at the first cloud).')


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


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options every live-node run of this module and ``attack.py`` shares: model, output, seed, docs."""
    parser.add_argument('--model', type=Path, default=SHIPPED_MODEL, help='checkpoint or contract JSON')
    parser.add_argument('--engines-dir', type=Path, default=REPO_ROOT / 'engines')
    parser.add_argument('--params-file', type=Path, default=PARAMS_FILE)
    parser.add_argument('--out', type=Path, default=REPO_ROOT / 'build' / 'reliability')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--write-docs', action='store_true', help='update the block in docs/benchmarks.md')


def start_run(model: Path, engines_dir: Path, params_file: Path, out: Path) -> RunContext:
    """Export the model if needed and put this process on loopback DDS with its logs under ``out``."""
    (out / 'logs').mkdir(parents=True, exist_ok=True)
    ctx = RunContext(ensure_exported(model, engines_dir), out, params_file)
    apply_ros_environment(log_dir=out / 'logs' / 'ros')
    return ctx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m mesc3d_training.reliability',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('kind', choices=('soak', 'fuzz'))
    add_run_arguments(parser)
    parser.add_argument('--duration-s', type=float, default=600.0, help='soak length')
    parser.add_argument('--rate-hz', type=float, default=30.0, help='soak camera rate')
    parser.add_argument('--objects-per-frame', type=int, default=5)
    parser.add_argument('--examples', type=int, default=300, help='fuzz cases')
    args = parser.parse_args(argv)
    interrupt_on_sigterm()
    out = args.out.resolve()
    try:
        ctx = start_run(args.model, args.engines_dir, args.params_file, out)
        if args.kind == 'soak':
            result = soak(ctx, args.duration_s, args.rate_hz, args.objects_per_frame, args.seed)
            markdown = soak_markdown(result, 'python -m mesc3d_training.reliability ' + ' '.join(argv or []))
        else:
            result = fuzz(ctx, args.examples, args.seed)
            markdown = fuzz_markdown(result, 'python -m mesc3d_training.reliability ' + ' '.join(argv or []))
    except DemoError as exc:
        LOGGER.error('%s failed: %s', args.kind, exc)
        return 1
    except KeyboardInterrupt:
        LOGGER.error('%s interrupted; child processes stopped', args.kind)
        return 130
    (out / f'{args.kind}.json').write_text(json.dumps(result, indent=1))
    print(markdown)
    if args.write_docs:
        replace_block(BENCHMARKS_DOC, f'reliability:{args.kind}', markdown, heading='Reliability')
    healthy = not result.get('node_crashed') and result.get('node_alive_after', True) and \
        result.get('good_frame_points_after', 1)
    return 0 if healthy else 1


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    sys.exit(main(sys.argv[1:]))
