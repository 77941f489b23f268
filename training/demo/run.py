"""
``mesc3d demo``: the shipped model in the real node, fed by a live stream of unseen objects, scored and pictured.

One command, four processes' worth of work (``make demo`` = ``make setup`` + this):

1. export the shipped checkpoint to ONNX + contract into ``engines/`` unless an export of exactly these weights is
   there already (``engines/<name>.source.json`` records which checkpoint bytes an export came from);
2. start the scene publisher (``publisher.py``, its own process): it renders test-split objects on a table
   (``scenes.py``), then streams RGB, depth, camera info and ground-truth detections once the node and the
   recorder subscribe;
3. start ``reconstruct_node`` (its own process) with ``--params-file config/reconstruct.yaml`` (what the launch
   file uses) and ``-p model_path:=…``, remapped onto the camera topics; beside it two more instances of the same
   node on the same stream (:data:`VARIANTS`), one without the shape fit and one publishing the ``fused`` cloud,
   each on its own output topics, so the report compares them on the frames all three answered;
4. record every topic into ``demo_out/bag`` (rosbag2 MCAP, ``recorder.py``) in this process, then match the
   clouds to frames, score them against ground truth in metres and write the table, ``summary.json``, a PLY and a
   PNG per object and ``overview.png`` (``report.py``, ``figures.py``).

Exit status 0 only when the node published non-empty clouds matched to published frames; otherwise a message says
what went wrong and where the logs are (``demo_out/logs``). All child processes are stopped on exit, Ctrl-C and
SIGTERM, and die with the demo even if it is killed (Linux parent-death signal).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mesc3d_ros.contract import load_contract
from mesc3d_ros.ros_env import REPO_ROOT, apply_ros_environment
from mesc3d_training import SHIPPED_MODEL
from mesc3d_training.demo.model import ensure_exported
from mesc3d_training.demo.processes import (NODE_NAME, NODE_UNDER_TEST, PARAMS_FILE, REMAPS, DemoError, NodeVariant,
                                            cpu_model, node_command, run_command, start_child,
                                            stopped_on_exit)

LOGGER = logging.getLogger(__name__)

RECORDER_NODE = 'mesc3d_demo_recorder'
VARIANTS = (NODE_UNDER_TEST,
            NodeVariant('no_fit', (('depth_fit', 'false'),), 'no_fit'),
            NodeVariant('fused', (('output_cloud', 'fused'),), 'fused'))
"""The node under test first; two more instances of the same node on the same stream, compared with it."""
DRAIN_S = 3.0
"""After the last frame, how long to wait for clouds still in the node (it finishes the frame it is working on)."""


@dataclass(frozen=True)
class DemoSettings:
    model: Path
    out_dir: Path
    engines_dir: Path
    duration_s: float
    rate_hz: float
    objects: int
    seed: int
    backend: str
    params_file: Path
    startup_timeout_s: float
    """Rendering plus node start-up must finish within this, else the demo gives up."""


def _prepare_out_dir(out_dir: Path) -> None:
    """Remove the previous run's outputs (only the names this demo writes; anything else is left alone)."""
    for name in ('bag', 'objects', 'clouds', 'logs'):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ('scenes.npz', 'stamps.json', 'summary.json', 'overview.png'):
        (out_dir / name).unlink(missing_ok=True)
    (out_dir / 'logs').mkdir(parents=True)


def record_run(settings: DemoSettings, contract_path: Path):
    """Start the publisher and the node, record until the stream ends and the node drains; return the Recording."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    from mesc3d_training.demo.recorder import Recorder

    out = settings.out_dir
    publisher = start_child('scene_publisher', [
        sys.executable, '-m', 'mesc3d_training.demo.publisher', '--model', str(contract_path),
        '--scenes', str(out / 'scenes.npz'), '--stamps-out', str(out / 'stamps.json'),
        '--duration-s', str(settings.duration_s), '--rate-hz', str(settings.rate_hz),
        '--objects', str(settings.objects), '--seed', str(settings.seed),
        *[arg for variant in VARIANTS for arg in ('--wait-for', variant.node_name)], '--wait-for', RECORDER_NODE,
        '--wait-timeout-s', str(settings.startup_timeout_s)], out / 'logs')
    children = [publisher]
    # Our own SIGINT/SIGTERM handling (KeyboardInterrupt) so that clean-up below always runs.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    recorder_node = rclpy.create_node(RECORDER_NODE)
    outputs = {}
    for variant in VARIANTS:
        outputs.update({variant.topic('points'): PointCloud2, variant.topic('objects'): Detection3DArray,
                        variant.topic('diagnostics'): DiagnosticArray})
    inputs = {REMAPS['image']: Image, REMAPS['depth']: Image, REMAPS['camera_info']: CameraInfo,
              REMAPS['detections']: Detection2DArray}
    # Leaving, however: the bag is finished first, then the children stopped and the recorder's node destroyed.
    with stopped_on_exit(children, recorder_node), Recorder(recorder_node, out / 'bag', inputs, outputs) as recorder:
        nodes = []
        for variant in VARIANTS:
            command = node_command(contract_path, settings.params_file, settings.backend, variant=variant)
            nodes.append(start_child(variant.node_name, command, out / 'logs'))
        children += nodes
        executor = SingleThreadedExecutor()
        executor.add_node(recorder_node)
        deadline = time.monotonic() + settings.startup_timeout_s + settings.duration_s + 30.0
        while publisher.popen.poll() is None:
            executor.spin_once(timeout_sec=0.05)
            for node in nodes:
                if node.popen.poll() is not None:
                    raise DemoError(f'{node.name} exited with status {node.popen.returncode} before the stream '
                                    f'ended; end of {node.log_path}:\n{node.tail()}')
            if time.monotonic() > deadline:
                raise DemoError(f'the stream did not finish in time; see {publisher.log_path} and '
                                f'{nodes[0].log_path}')
        if publisher.popen.returncode != 0:
            raise DemoError(f'the scene publisher failed (status {publisher.popen.returncode}); end of '
                            f'{publisher.log_path}:\n{publisher.tail()}\n  node log {nodes[0].log_path}:\n'
                            f'{nodes[0].tail(8)}')
        # Let the nodes finish the frame they are on: stop when no cloud has arrived for DRAIN_S.
        clouds = [recorder.recording.outputs[variant.topic('points')] for variant in VARIANTS]
        last_change, seen = time.monotonic(), sum(map(len, clouds))
        while time.monotonic() - last_change < DRAIN_S:
            executor.spin_once(timeout_sec=0.05)
            if sum(map(len, clouds)) != seen:
                last_change, seen = time.monotonic(), sum(map(len, clouds))
        return recorder.close()


def run_demo(settings: DemoSettings) -> int:
    """Everything after argument parsing; raises DemoError with a user-facing message on failure."""
    started = time.monotonic()
    contract_path = ensure_exported(settings.model, settings.engines_dir)
    contract = load_contract(contract_path)
    _prepare_out_dir(settings.out_dir)
    env = apply_ros_environment(log_dir=settings.out_dir / 'logs' / 'ros')  # this process and its children
    LOGGER.info('ROS_DOMAIN_ID=%s, loopback only; model %s', env['ROS_DOMAIN_ID'], contract_path)
    recording = record_run(settings, contract_path)

    from mesc3d_training.demo import figures, report  # torch and matplotlib: after the run
    from mesc3d_training.demo.scenes import load_sequence

    sequence = load_sequence(settings.out_dir / 'scenes.npz')
    sent = json.loads((settings.out_dir / 'stamps.json').read_text())['frames']
    runs = {variant.name: report.evaluate(sequence, sent, recording, variant.topic('points'),
                                          variant.topic('objects'), variant.topic('diagnostics'))
            for variant in VARIANTS}
    run = runs[VARIANTS[0].name]
    context = {
        'model': {'name': contract.name, 'contract': str(contract_path), 'onnx_sha256': contract.model_sha256,
                  'backend': run.diagnostics.get('backend', settings.backend)},
        'rate_hz': settings.rate_hz, 'duration_s': settings.duration_s, 'seed': settings.seed,
        'test_objects': len({truth.object_id for scene in sequence.scenes for truth in scene.objects}),
        'scenes': len(sequence.scenes), 'bag_messages': recording.counts,
        'machine': {'cpu': cpu_model(), 'cores': os.cpu_count(), 'load_average': os.getloadavg(),
                    'python': platform.python_version()},
    }
    summary = report.summarise(run, context)
    summary['comparison'] = report.compare(runs)
    if run.objects:
        figures.write_object_outputs(run.objects, sequence, contract.crop_padding, settings.out_dir)
        figures.overview_figure(figures.overview_frame(list(run.frames)), sequence,
                                settings.out_dir / 'overview.png')
    summary['wall_time_s'] = round(time.monotonic() - started, 1)
    report.write_summary(summary, settings.out_dir / 'summary.json')
    # The table is the command's result, so it goes to stdout (logging goes to stderr).
    print(report.format_table(summary))
    pictures = 'overview.png, objects/*.png, clouds/*.ply, ' if run.objects else ''
    print(f'\nwrote {settings.out_dir}/: summary.json, {pictures}bag/ (rosbag2 MCAP), logs/')
    if not any(frame.objects for frame in run.frames):
        raise DemoError(f'the node published no non-empty cloud matched to a frame ({run.clouds_received} clouds '
                        f'received, {run.clouds_unmatched} with unknown stamps, {run.empty_clouds} empty); see '
                        f'{settings.out_dir}/logs/{NODE_NAME}.log')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d demo', description=__doc__.strip().splitlines()[0])
    parser.add_argument('--model', type=Path, default=SHIPPED_MODEL,
                        help='checkpoint (.safetensors/.yaml/stem, exported when needed) or an exported contract '
                             'JSON (default: the shipped model)')
    parser.add_argument('--out', type=Path, default=REPO_ROOT / 'demo_out', help='output folder')
    parser.add_argument('--engines-dir', type=Path, default=REPO_ROOT / 'engines')
    parser.add_argument('--duration-s', type=float, default=20.0, help='length of the camera stream')
    parser.add_argument('--rate-hz', type=float, default=15.0, help='camera frame rate')
    parser.add_argument('--objects', type=int, default=12, help='distinct test-split objects to play')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--backend', default='auto', choices=('auto', 'tensorrt', 'onnxruntime'))
    parser.add_argument('--params-file', type=Path, default=PARAMS_FILE,
                        help='node parameters (default: the file the launch file uses)')
    parser.add_argument('--startup-timeout-s', type=float, default=180.0)
    args = parser.parse_args(argv)
    settings = DemoSettings(model=args.model, out_dir=args.out.resolve(), engines_dir=args.engines_dir,
                            duration_s=args.duration_s, rate_hz=args.rate_hz, objects=args.objects, seed=args.seed,
                            backend=args.backend, params_file=args.params_file,
                            startup_timeout_s=args.startup_timeout_s)
    return run_command('demo', lambda: run_demo(settings))
