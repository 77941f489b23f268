"""
Soak: the scene publisher plays 5 test-split objects per frame at 30 Hz into the live node for ``--duration-s``.

``python -m mesc3d_training.reliability soak`` (the issue asks for 10 minutes; CPU backend). Reported: frames sent,
clouds received, frames the node dropped, end-to-end latency percentiles (image stamp -> cloud received), the
node's resident memory (RSS) over time, and whether it survived and shut down cleanly.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import date

import numpy as np
import psutil

from mesc3d_training.demo.processes import NODE_NAME, Child, DemoError, node_command, start_child, stopped_on_exit
from mesc3d_training.reliability.run import MONITOR_NODE, RunContext, spin_until

LOGGER = logging.getLogger(__name__)
SMALL_CATEGORIES = {'mug', 'bottle', 'bowl', 'toy', 'electronics', 'kitchen_appliance', 'vase', 'box'}
"""Graspable categories: five of them fit on one table in view."""


def soak(ctx: RunContext, duration_s: float, rate_hz: float, objects_per_frame: int, seed: int) -> dict:
    """Stream ``objects_per_frame`` objects at ``rate_hz`` for ``duration_s`` into the node; measure it."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import PointCloud2

    from mesc3d_ros.conversions import stamp_to_ns
    from mesc3d_training.demo.publisher import demo_categories, load_demo_objects
    from mesc3d_training.demo.scenes import SceneSettings, render_sequence, save_sequence

    scenes_path, stamps_path = ctx.out_dir / 'soak_scenes.npz', ctx.out_dir / 'soak_stamps.json'
    settings = SceneSettings(min_objects=objects_per_frame, max_objects=objects_per_frame,
                             min_visible_fraction=0.6, layout_tries=30, seed=seed)
    pool = load_demo_objects(SMALL_CATEGORIES & demo_categories(ctx.contract_path), count=12, seed=seed)
    frames = round(duration_s * rate_hz)
    # 12 scenes of one second each, played round and round: memory must not grow with the number of distinct frames.
    save_sequence(render_sequence(
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
    with stopped_on_exit(children, monitor):
        node = start_child(NODE_NAME, node_command(ctx.contract_path, ctx.params_file, 'onnxruntime'),
                           ctx.out_dir / 'logs')
        children.append(node)
        publisher = start_child('scene_publisher', [
            sys.executable, '-m', 'mesc3d_training.demo.publisher', '--replay', '--scenes', str(scenes_path),
            '--stamps-out', str(stamps_path), '--wait-for', NODE_NAME],
            ctx.out_dir / 'logs')
        children.append(publisher)
        node_process = psutil.Process(node.popen.pid)
        spin_until(executor, lambda: clouds or publisher.popen.poll() is not None, 180.0, node)
        if not clouds:
            raise DemoError(f'no cloud within 180 s of the start; end of {publisher.log_path}:\n{publisher.tail()}'
                            f'\n  and of {node.log_path}:\n{node.tail()}')
        started = time.monotonic()
        next_sample = started
        try:
            while publisher.popen.poll() is None:
                spin_until(executor, lambda: time.monotonic() >= next_sample, 5.0, node)
                rss.append((time.monotonic() - started, node_process.memory_info().rss))
                next_sample += 5.0
            spin_until(executor, lambda: False, 3.0, node)  # the node finishes the frame it is on
            rss.append((time.monotonic() - started, node_process.memory_info().rss))
        except DemoError as exc:  # the node died: that is the result, not a failure of the tool
            LOGGER.error('%s', exc)
            crashed = True
        node.stop()
        exit_status = node.popen.returncode
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
