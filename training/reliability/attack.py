"""
Mixed adversarial campaign against the live node (a benchmark, not a test): issue 17's numbers, docs/benchmarks.md.

``python -m mesc3d_training.reliability.attack --duration-s 600 --write-docs`` starts ``reconstruct_node`` (CPU
backend, depth on, ``config/reconstruct.yaml``) on the given model and, for ``--duration-s``, sends rounds of one
**attack frame** (a type-valid but hostile frame from one of the classes below, drawn at random) followed by one
**good frame** of the demo scene. Then, for ``--log-phase-s``, only the 1 MB-string attacks, to measure the log
volume they cause.

Attack classes: extreme intrinsics (fx 1e-12 … 1e300, 5e-324, cx ±1e5/1e300, skew 1e300, NaN), a bad CameraInfo
with the frame's stamp followed by a good one, depth edge cases (all zero, 1e-45 m, sub-millimetre, NaN, inf,
negative, 16UC1 zeros), junk scores (NaN, inf, 7.5, −1), 500 valid boxes, wild boxes (NaN/inf/1e308/inverted, inf
rotation), 1 MB strings (encoding, class id, frame id, detection id), unnormalised stamps (nanosec 4294967295),
malformed images (sizes that do not fit the data, unknown encodings).

Measured: every published cloud and Detection3DArray is decoded and checked (non-finite point, z <= 0, an object
more than 10 m across), clouds answering a frame whose own CameraInfo was bad, ``internal_error`` and tracebacks and
numpy warnings in the node's output, the time from publishing each good frame to receiving its cloud, the node's
RSS every 5 s (flat = within 10 % after the warm-up), log bytes per minute in the log phase, and that the node lived.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import deque
from datetime import date

import numpy as np
import psutil

from mesc3d_training.demo.processes import (NODE_NAME, REMAPS, Child, DemoError, node_command, run_command,
                                            start_child, stopped_on_exit)
from mesc3d_training.reliability.run import (BENCHMARKS_DOC, MONITOR_NODE, RunContext, add_run_arguments, good_frame,
                                             spin_until, start_run)
from mesc3d_training.reports.markdown_blocks import replace_block

MB_STRING = 'x' * 2**20
EXTREME_K = [  # (fx, fy, cx, cy, skew) of the attack campaign that issue 17 reports
    (1e-12, 1e-12, None, None, 0.0), (1e300, 1e300, None, None, 0.0), (5e-324, 5e-324, None, None, 0.0),
    (1e40, 1e40, None, None, 0.0), (None, None, -1e5, None, 0.0), (None, None, 1e300, None, 0.0),
    (None, None, None, None, 1e300), (float('nan'), None, None, None, 0.0), (-500.0, None, None, None, 0.0),
]
ATTACKS = ('extreme_k', 'bad_k_then_good_k', 'depth_edge', 'bad_score', 'many_boxes', 'wild_boxes', 'huge_string',
           'bad_stamp', 'bad_image')
MAX_OBJECT_M = 10.0


def _copy(message):
    """Return a deep copy of a ROS message (the generated classes copy their fields on assignment via setters)."""
    from rclpy.serialization import deserialize_message, serialize_message
    return deserialize_message(serialize_message(message), type(message))


class Attacker:
    """Builds attack frames from the good frame: each returns (camera_info, image, depth, detections, followup)."""

    def __init__(self, good, rng: np.random.Generator) -> None:
        self.good, self.good_depth, self.rng = good, good.depth, rng

    def frame(self, kind: str):
        from sensor_msgs.msg import Image
        info, image, depth, detections = (_copy(self.good.camera_info), self.good.image, self.good_depth,
                                          _copy(self.good.detections))
        followup = None
        if kind in ('extreme_k', 'bad_k_then_good_k'):
            fx, fy, cx, cy, skew = EXTREME_K[self.rng.integers(len(EXTREME_K))]
            k = list(info.k)
            for index, value in ((0, fx), (4, fy), (2, cx), (5, cy), (1, skew)):
                if value is not None:
                    k[index] = value
            info.k = k
            if kind == 'bad_k_then_good_k':
                followup = self.good.camera_info  # a good K right after, with the same stamp
        elif kind == 'depth_edge':
            value = self.rng.choice([0.0, 1e-45, 1e-4, np.nan, np.inf, -1.0, 'zeros16'])
            if value == 'zeros16':
                depth = _copy(self.good_depth)
                depth.data = bytes(len(depth.data))
            else:
                height, width = self.good_depth.height, self.good_depth.width
                pixels = np.full((height, width), float(value), dtype='<f4')
                depth = Image(height=height, width=width, encoding='32FC1', is_bigendian=0, step=width * 4,
                              data=pixels.tobytes())
        elif kind == 'bad_score':
            for detection in detections.detections:
                detection.results[0].hypothesis.score = float(self.rng.choice([np.nan, np.inf, -np.inf, 7.5, -1.0]))
        elif kind == 'many_boxes':
            template = detections.detections[0]
            detections.detections = [_copy(template) for _ in range(500)]
        elif kind == 'wild_boxes':
            wild = [np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0, -50.0, 5e-324]
            for detection in detections.detections:
                centre = getattr(detection.bbox.center, 'position', detection.bbox.center)
                field = self.rng.integers(5)
                value = float(self.rng.choice(wild))
                if field == 0:
                    centre.x = value
                elif field == 1:
                    centre.y = value
                elif field == 2:
                    detection.bbox.size_x = value
                elif field == 3:
                    detection.bbox.size_y = value
                else:
                    detection.bbox.center.theta = value
        elif kind == 'huge_string':
            image = _copy(self.good.image)
            target = self.rng.integers(4)
            if target == 0:
                image.encoding = MB_STRING
            elif target == 1:
                for detection in detections.detections:
                    detection.results[0].hypothesis.class_id = MB_STRING
            elif target == 2:
                info.header.frame_id = MB_STRING
                info.k = [1e-12] + list(info.k)[1:]  # so that the frame id reaches an error message
            else:
                for detection in detections.detections:
                    detection.id = MB_STRING
        elif kind == 'bad_image':
            image = _copy(self.good.image)
            choice = self.rng.integers(3)
            if choice == 0:
                image.encoding = self.rng.choice(['yuv422', 'bayer_rggb8', '', 'jpeg'])
            elif choice == 1:
                image.step = image.step + 7
            else:
                image.height = image.height * 2
        return info, image, depth, detections, followup


def _check_cloud(msg) -> list[str]:
    """List what is wrong with a published cloud: non-finite, z <= 0, an object more than 10 m across."""
    from mesc3d_ros.conversions import cloud_to_structured
    table = cloud_to_structured(msg)
    if not len(table):
        return []
    xyz = np.stack([table['x'], table['y'], table['z']], axis=1).astype(np.float64)  # (N, 3) metres, optical frame
    problems = []
    if not np.isfinite(xyz).all():
        return ['non_finite']
    if (xyz[:, 2] <= 0).any():
        problems.append('z_le_0')
    for index in np.unique(table['object_index']):
        points = xyz[table['object_index'] == index]
        if (points.max(axis=0) - points.min(axis=0)).max() > MAX_OBJECT_M:
            problems.append('larger_than_10m')
            break
    return problems


def attack(ctx: RunContext, duration_s: float, log_phase_s: float, warmup_s: float, seed: int,
           max_objects: int | None) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    good = good_frame(ctx, seed)
    good_depth = good.depth
    attacker = Attacker(good, np.random.default_rng(seed))

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    monitor = rclpy.create_node(MONITOR_NODE)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {'image': monitor.create_publisher(Image, REMAPS['image'], qos),
            'depth': monitor.create_publisher(Image, REMAPS['depth'], qos),
            'detections': monitor.create_publisher(Detection2DArray, REMAPS['detections'], qos),
            'camera_info': monitor.create_publisher(CameraInfo, REMAPS['camera_info'], qos)}
    received: dict[tuple[int, int], float] = {}  # (sec, nanosec) -> monotonic receive time
    bad_clouds: dict[str, int] = {}
    clouds = {'count': 0, 'objects_too_large': 0}

    def on_cloud(msg) -> None:
        clouds['count'] += 1
        received[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
        for problem in _check_cloud(msg):
            bad_clouds[problem] = bad_clouds.get(problem, 0) + 1

    def on_objects(msg) -> None:
        for detection in msg.detections:
            size = detection.bbox.size
            if not max(size.x, size.y, size.z) <= MAX_OBJECT_M:
                clouds['objects_too_large'] += 1

    diagnostics: deque = deque(maxlen=1)  # the node's latest /diagnostics
    monitor.create_subscription(PointCloud2, '/mesc3d/points', on_cloud, 10)
    monitor.create_subscription(DiagnosticArray, '/diagnostics', lambda msg: diagnostics.append(msg), 10)
    monitor.create_subscription(Detection3DArray, '/mesc3d/objects', on_objects, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)

    def send(info, image, depth, detections, followup=None, stamp=None) -> tuple[int, int]:
        stamp = stamp or monitor.get_clock().now().to_msg()
        for message in (info, image, depth, detections, followup):
            if message is not None:
                message.header.stamp = stamp
        pubs['camera_info'].publish(info)
        # A camera publishes CameraInfo with the image, well before a detector answers: let it arrive first.
        spin_until(executor, lambda: False, 0.01)
        pubs['image'].publish(image)
        pubs['depth'].publish(depth)
        pubs['detections'].publish(detections)
        if followup is not None:
            pubs['camera_info'].publish(followup)
        return stamp.sec, stamp.nanosec

    def good_round(timeout_s: float) -> float | None:
        """Seconds from publishing a good frame to its cloud, or None."""
        sent = time.monotonic()
        key = send(_copy(good.camera_info), good.image, good_depth, _copy(good.detections))
        if spin_until(executor, lambda: key in received, timeout_s, node):
            return received[key] - sent
        return None

    children: list[Child] = []
    sent_by_kind: dict[str, int] = {}
    answer_s: list[float] = []
    answer_by_kind: dict[str, list[float]] = {}  # the attack just before each good frame -> its answer times
    unanswered = 0
    unanswered_by_kind: dict[str, int] = {}
    answered_bad_k = 0
    rss: list[tuple[float, float]] = []
    log_bytes: list[tuple[float, int]] = []
    crash = ''
    with stopped_on_exit(children, monitor):
        command = node_command(ctx.contract_path, ctx.params_file, 'onnxruntime', use_depth=True)
        if max_objects is not None:
            command += ['-p', f'max_objects:={max_objects}']
        node = start_child(NODE_NAME, command, ctx.out_dir / 'logs')
        children.append(node)
        process = psutil.Process(node.popen.pid)
        first = None
        deadline = time.monotonic() + 180.0
        while first is None and time.monotonic() < deadline:
            first = good_round(2.0)
        if first is None:
            raise DemoError(f'the node did not answer a good frame before the attack; see {node.log_path}')
        started = next_sample = time.monotonic()
        rng = np.random.default_rng(seed + 1)
        try:
            while time.monotonic() - started < duration_s + log_phase_s:
                in_log_phase = time.monotonic() - started >= duration_s
                kind = 'huge_string' if in_log_phase else str(rng.choice(ATTACKS))
                sent_by_kind[kind] = sent_by_kind.get(kind, 0) + 1
                info, image, depth, detections, followup = attacker.frame(kind)
                if kind == 'bad_stamp':
                    stamp = monitor.get_clock().now().to_msg()
                    stamp.nanosec = 4_294_967_295
                    key = send(info, image, depth, detections, stamp=stamp)
                else:
                    key = send(info, image, depth, detections, followup)
                spin_until(executor, lambda: False, 0.05, node)
                seconds = good_round(5.0)
                if seconds is None:
                    unanswered += 1
                    unanswered_by_kind[kind] = unanswered_by_kind.get(kind, 0) + 1
                else:
                    answer_s.append(seconds)
                    answer_by_kind.setdefault(kind, []).append(seconds)
                if kind in ('extreme_k', 'bad_k_then_good_k') and key in received:
                    answered_bad_k += 1
                now = time.monotonic()
                if now >= next_sample:
                    rss.append((now - started, process.memory_info().rss / 2**20))
                    log_bytes.append((now - started, node.log_path.stat().st_size))
                    next_sample += 5.0
        except DemoError as exc:
            crash = str(exc)
        alive = node.popen.poll() is None
    log = node.log_path.read_text(errors='replace')
    seconds = np.array([t for t, _ in rss])
    memory = np.array([m for _, m in rss])
    after = memory[(seconds >= warmup_s) & (seconds <= duration_s)]
    log_phase = [(t, b) for t, b in log_bytes if t >= duration_s]
    log_rate = ((log_phase[-1][1] - log_phase[0][1]) / max(log_phase[-1][0] - log_phase[0][0], 1e-9) * 60
                if len(log_phase) > 1 else None)
    answers = np.array(answer_s) if answer_s else np.zeros(1)
    return {
        'kind': 'attack', 'date': date.today().isoformat(), 'machine': ctx.machine(), 'model': ctx.model(),
        'max_objects': max_objects or 'default',
        'duration_s': duration_s, 'log_phase_s': log_phase_s, 'warmup_s': warmup_s, 'sent_by_kind': sent_by_kind,
        'rounds': sum(sent_by_kind.values()), 'clouds_received': clouds['count'], 'bad_clouds': bad_clouds,
        'objects_larger_than_10m': clouds['objects_too_large'], 'answered_frames_with_bad_k': answered_bad_k,
        'internal_error_lines': log.count('[internal_error]'), 'traceback_lines': log.count('Traceback'),
        'runtime_warnings': log.count('RuntimeWarning'),
        'good_frames': len(answer_s) + unanswered, 'good_frames_unanswered_5s': unanswered,
        'unanswered_after_kind': unanswered_by_kind,
        'node_diagnostics': {kv.key: kv.value for status in diagnostics[-1].status for kv in status.values}
        if diagnostics else {},
        'good_answer_s': {'p50': float(np.percentile(answers, 50)), 'p95': float(np.percentile(answers, 95)),
                          'max': float(answers.max()), 'over_1s': int((answers > 1.0).sum())},
        'good_answer_after_kind_s': {kind: {'p50': float(np.median(v)), 'max': float(max(v)),
                                            'over_1s': sum(x > 1.0 for x in v)}
                                     for kind, v in sorted(answer_by_kind.items())},
        'rss_mib': {'first': float(memory[0]) if len(memory) else None,
                    'after_warmup_min': float(after.min()) if len(after) else None,
                    'after_warmup_max': float(after.max()) if len(after) else None,
                    'after_warmup_spread_pct': float(100 * (after.max() - after.min()) / after.min())
                    if len(after) else None},
        'rss_series_mib': [[round(float(t), 1), round(float(m), 1)] for t, m in rss],
        'log_bytes_total': len(log.encode()), 'log_bytes_per_min_in_log_phase': log_rate,
        'node_alive_after': alive, 'crash': crash, 'node_exit_status_after_sigint': node.popen.returncode,
    }


def attack_markdown(result: dict, command: str) -> str:
    kinds = ', '.join(f'{count} {kind}' for kind, count in sorted(result['sent_by_kind'].items()))
    answer, rss = result['good_answer_s'], result['rss_mib']
    bad = sum(result['bad_clouds'].values())
    log_rate = result['log_bytes_per_min_in_log_phase']
    return '\n'.join([
        f'Mixed attack (issue 17), measured {result["date"]} with `{command}`.',
        '',
        f'- Machine: {result["machine"]}.',
        f'- Model: `{result["model"]}`, backend onnxruntime, depth on, `config/reconstruct.yaml`, max_objects '
        f'{result["max_objects"]}.',
        f'- {result["duration_s"]:g} s of rounds "one attack frame, then one good frame" ({kinds}), then '
        f'{result["log_phase_s"]:g} s of 1 MB-string attacks only (log phase). {result["clouds_received"]} clouds '
        'received and checked.',
        '',
        '| measure | value | target |',
        '|---|---|---|',
        f'| published clouds with a non-finite point, z ≤ 0 or an object > 10 m | {bad} '
        f'({result["bad_clouds"] or "none"}); Detection3D boxes > 10 m: {result["objects_larger_than_10m"]} | 0 |',
        f'| frames answered although their own CameraInfo was implausible | '
        f'{result["answered_frames_with_bad_k"]} | 0 |',
        f'| `internal_error` / tracebacks / numpy RuntimeWarnings in the node output | '
        f'{result["internal_error_lines"]} / {result["traceback_lines"]} / {result["runtime_warnings"]} | 0 |',
        f'| next good frame: publish → cloud p50 / p95 / max | {answer["p50"]:.2f} / {answer["p95"]:.2f} / '
        f'{answer["max"]:.2f} s; {answer["over_1s"]} of {result["good_frames"]} over 1 s, '
        f'{result["good_frames_unanswered_5s"]} unanswered within 5 s (after: '
        f'{result["unanswered_after_kind"] or "none"}) | all within 1 s |',
        f'| node RSS after {result["warmup_s"]:g} s warm-up (min … max) | '
        + (f'{rss["after_warmup_min"]:.1f} … {rss["after_warmup_max"]:.1f} MiB, spread '
           f'{rss["after_warmup_spread_pct"]:.1f} %' if rss['after_warmup_min'] is not None
           else 'not measured (the run ended before the warm-up did)')
        + f' (first sample {rss["first"]:.1f} MiB) | within 10 % |',
        '| node log volume in the log phase | '
        + (f'{log_rate / 1000:.2f} kB/min' if log_rate is not None else 'not measured (phase too short)')
        + f' ({result["log_bytes_total"] / 1000:.1f} kB in the whole run) | < 10 kB/min |',
        f'| node alive afterwards, exit status on SIGINT | {"yes" if result["node_alive_after"] else "**no**"}, '
        f'{result["node_exit_status_after_sigint"]} | yes, 0 |',
        '',
        'Next good frame by the attack just before it (p50 / max s, how many over 1 s): '
        + '; '.join(f'{kind} {v["p50"]:.2f} / {v["max"]:.2f} ({v["over_1s"]})'
                    for kind, v in result['good_answer_after_kind_s'].items()) + '.',
        '',
        "Log volume is the growth of the node's stdout/stderr (its console log) per minute, sampled every 5 s.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m mesc3d_training.reliability.attack',
                                     description=__doc__.strip().splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument('--duration-s', type=float, default=600.0, help='mixed attack length')
    parser.add_argument('--log-phase-s', type=float, default=65.0, help='1 MB-string attacks only, afterwards')
    parser.add_argument('--warmup-s', type=float, default=60.0, help='RSS before this is warm-up')
    parser.add_argument('--max-objects', type=int, help="the node's max_objects (default: the params file's)")
    args = parser.parse_args(argv)
    out = args.out.resolve()

    def run() -> int:
        ctx = start_run(args.model, args.engines_dir, args.params_file, out)
        result = attack(ctx, args.duration_s, args.log_phase_s, args.warmup_s, args.seed, args.max_objects)
        (out / 'attack.json').write_text(json.dumps(result, indent=1))
        markdown = attack_markdown(result, 'python -m mesc3d_training.reliability.attack ' + ' '.join(argv or []))
        print(markdown)
        if args.write_docs:
            suffix = '' if args.max_objects is None else f':max_objects_{args.max_objects}'
            replace_block(BENCHMARKS_DOC, f'reliability:attack{suffix}', markdown, heading='Reliability')
        return 0 if result['node_alive_after'] and not sum(result['bad_clouds'].values()) else 1

    return run_command('attack', run)


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    sys.exit(main(sys.argv[1:]))
