"""
``mesc3d demo``: the shipped model in the real node, fed by a live stream of unseen objects, scored and pictured.

One command, four processes' worth of work (``make demo`` = ``make setup`` + this):

1. export the shipped checkpoint to ONNX + contract into ``engines/`` unless an export of exactly these weights is
   there already (``engines/<name>.source.json`` records which checkpoint bytes an export came from);
2. start the scene publisher (``scene_publisher.py``, its own process): it renders test-split objects on a table
   (``demo_scenes.py``), then streams RGB, depth, camera info and ground-truth detections once the node and the
   recorder subscribe;
3. start ``reconstruct_node`` (its own process) with ``--params-file config/reconstruct.yaml`` (what the launch
   file uses) and ``-p model_path:=…``, remapped onto the camera topics; beside it two more instances of the same
   node on the same stream (:data:`VARIANTS`), one without the shape fit and one publishing the ``fused`` cloud,
   each on its own output topics, so the report compares them on the frames all three answered;
4. record every topic into ``demo_out/bag`` (rosbag2 MCAP, ``demo_recorder.py``) in this process, then match the
   clouds to frames, score them against ground truth in metres and write the table, ``summary.json``, a PLY and a
   PNG per object and ``overview.png`` (``demo_report.py``, ``demo_figures.py``).

Exit status 0 only when the node published non-empty clouds matched to published frames; otherwise a message says
what went wrong and where the logs are (``demo_out/logs``). All child processes are stopped on exit, Ctrl-C and
SIGTERM, and die with the demo even if it is killed (Linux parent-death signal).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mesc3d_ros.contract import ContractError, file_sha256, load_contract, verify_model_file
from mesc3d_ros.ros_env import REPO_ROOT, apply_ros_environment
from mesc3d_training import SHIPPED_MODEL

LOGGER = logging.getLogger(__name__)

PARAMS_FILE = REPO_ROOT / 'config' / 'reconstruct.yaml'
RECORDER_NODE = 'mesc3d_demo_recorder'
NODE_NAME = 'reconstruct_node'
# The node's relative input names -> the scene publisher's topics (scene_publisher.Topics), as a launch file remaps.
REMAPS = {'image': '/camera/color/image_raw', 'depth': '/camera/aligned_depth_to_color/image_raw',
          'camera_info': '/camera/color/camera_info', 'detections': '/detections'}


@dataclass(frozen=True)
class NodeVariant:
    """One reconstruct_node instance of the demo: the node under test, or a comparison run on the same stream."""

    name: str
    params: tuple[tuple[str, str], ...]
    """``-p`` overrides on top of the parameter file."""
    namespace: str
    """'' for the node under test (the topics the launch file uses); else its outputs go under /mesc3d/<namespace>/."""

    @property
    def node_name(self) -> str:
        return f'{NODE_NAME}_{self.namespace}' if self.namespace else NODE_NAME

    def topic(self, name: str) -> str:
        """``points``, ``objects`` or ``diagnostics`` of this instance."""
        if not self.namespace:
            return '/diagnostics' if name == 'diagnostics' else f'/mesc3d/{name}'
        return f'/mesc3d/{self.namespace}/{name}'


VARIANTS = (NodeVariant('fit', (), ''),
            NodeVariant('no_fit', (('depth_fit', 'false'),), 'no_fit'),
            NodeVariant('fused', (('output_cloud', 'fused'),), 'fused'))
"""The node under test (the parameter file as is: with depth, shapes fitted to the visible surface) first."""
DRAIN_S = 3.0
"""After the last frame, how long to wait for clouds still in the node (it finishes the frame it is working on)."""


class DemoError(RuntimeError):
    """The demo cannot run or the node produced nothing usable; the message says why and where to look."""


# ---- the model ----------------------------------------------------------------------------------------------------

def ensure_exported(model: Path, engines_dir: Path) -> Path:
    """Return the contract JSON to run: ``model`` itself if it is one, else a fresh export of the checkpoint."""
    if model.suffix == '.json':
        try:
            verify_model_file(load_contract(model), model)
        except ContractError as exc:
            raise DemoError(f'model contract unusable: {exc}') from exc
        return model
    stem = model.with_suffix('') if model.suffix in ('.safetensors', '.yaml') else model
    weights, meta = stem.with_suffix('.safetensors'), stem.with_suffix('.yaml')
    missing = [str(path) for path in (weights, meta) if not path.is_file()]
    if missing:
        raise DemoError(f'model checkpoint missing: {", ".join(missing)}. The shipped model is trained with '
                        f'`mesc3d train config/mesc3d_small.yaml` (models/README.md); or pass --model with a '
                        f'contract JSON written by `mesc3d export`.')
    name = yaml.safe_load(meta.read_text())['config']['model']['name']
    contract_path = engines_dir / f'{name}.json'
    source = {'checkpoint': str(stem), 'weights_sha256': file_sha256(weights), 'meta_sha256': file_sha256(meta)}
    source_path = engines_dir / f'{name}.source.json'
    if _export_is_current(contract_path, source_path, source):
        LOGGER.info('using %s (exported from these checkpoint bytes)', contract_path)
        return contract_path
    LOGGER.info('exporting %s to %s (no export of these weights yet)', weights, engines_dir)
    from mesc3d_training.checkpoint import load_model  # torch: only when an export is needed
    from mesc3d_training.export import export_model

    for chatty in ('onnxscript', 'onnx_ir'):  # one INFO line per folded constant otherwise (as `mesc3d export`)
        logging.getLogger(chatty).setLevel(logging.WARNING)
    contract_path = export_model(load_model(weights), engines_dir)
    source_path.write_text(json.dumps(source, indent=1))
    return contract_path


def _export_is_current(contract_path: Path, source_path: Path, source: dict) -> bool:
    if not (contract_path.is_file() and source_path.is_file()):
        return False
    try:
        verify_model_file(load_contract(contract_path), contract_path)
        recorded = json.loads(source_path.read_text())
    except (ContractError, ValueError) as exc:
        LOGGER.info('re-exporting: %s', exc)
        return False
    return all(recorded.get(key) == source[key] for key in ('weights_sha256', 'meta_sha256'))


# ---- child processes ----------------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Ask the kernel (in the child, before exec) to send it SIGTERM when the demo dies, however it dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors='replace').splitlines()
        return '\n'.join(f'    {line}' for line in text[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGINT (a ROS process's normal shutdown), SIGKILL if it is still there after ``timeout_s``."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                LOGGER.warning('%s ignored SIGINT for %.0f s; killing it', self.name, timeout_s)
                self.popen.kill()
                self.popen.wait()


def start_child(name: str, command: list[str], log_dir: Path) -> Child:
    log_path = log_dir / f'{name}.log'
    with open(log_path, 'wb') as log:
        popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 preexec_fn=_die_with_parent if sys.platform == 'linux' else None)
    LOGGER.info('started %s (pid %d), log %s', name, popen.pid, log_path)
    return Child(name, popen, log_path)


def console_script(name: str) -> str:
    """Find a console script of this installation: next to this Python first (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise DemoError(f'console script {name!r} not found next to {sys.executable} or on PATH: run `make setup`')
    return found


def node_command(contract_path: Path, params_file: Path, backend: str, use_depth: bool = True,
                 variant: NodeVariant = VARIANTS[0]) -> list[str]:
    """``reconstruct_node`` as the launch file starts it, remapped onto the scene publisher's topics."""
    if not params_file.is_file():
        raise DemoError(f'node parameter file missing: {params_file}')
    command = [console_script(NODE_NAME), '--ros-args', '-r', f'__node:={variant.node_name}', '--params-file',
               str(params_file), '-p', f'model_path:={contract_path}', '-p', f'use_depth:={str(use_depth).lower()}',
               '-p', f'backend:={backend}']
    for name, value in variant.params:
        command += ['-p', f'{name}:={value}']
    for name, topic in REMAPS.items():
        command += ['-r', f'{name}:={topic}']
    if variant.namespace:
        for name, topic in (('mesc3d/points', 'points'), ('mesc3d/objects', 'objects'),
                            ('/diagnostics', 'diagnostics')):
            command += ['-r', f'{name}:={variant.topic(topic)}']
    return command


def cpu_model() -> str:
    """Return the CPU's marketing name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- the run ------------------------------------------------------------------------------------------------------

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

    from mesc3d_training.demo_recorder import Recorder

    out = settings.out_dir
    publisher = start_child('scene_publisher', [
        sys.executable, '-m', 'mesc3d_training.scene_publisher', '--model', str(contract_path),
        '--scenes', str(out / 'scenes.npz'), '--stamps-out', str(out / 'stamps.json'),
        '--duration-s', str(settings.duration_s), '--rate-hz', str(settings.rate_hz),
        '--objects', str(settings.objects), '--seed', str(settings.seed),
        *[arg for variant in VARIANTS for arg in ('--wait-for', variant.node_name)], '--wait-for', RECORDER_NODE,
        '--wait-timeout-s', str(settings.startup_timeout_s)], out / 'logs')
    children = [publisher]
    # Our own SIGINT/SIGTERM handling (KeyboardInterrupt) so that clean-up below always runs.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    recorder_node = rclpy.create_node(RECORDER_NODE)
    recorder = None
    try:
        nodes = []
        for variant in VARIANTS:
            command = node_command(contract_path, settings.params_file, settings.backend, variant=variant)
            nodes.append(start_child(variant.node_name, command, out / 'logs'))
        children += nodes
        outputs = {}
        for variant in VARIANTS:
            outputs.update({variant.topic('points'): PointCloud2, variant.topic('objects'): Detection3DArray,
                            variant.topic('diagnostics'): DiagnosticArray})
        recorder = Recorder(recorder_node, out / 'bag', inputs={
            REMAPS['image']: Image, REMAPS['depth']: Image, REMAPS['camera_info']: CameraInfo,
            REMAPS['detections']: Detection2DArray}, outputs=outputs)
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
    finally:
        for child in reversed(children):
            child.stop()
        if recorder is not None and not recorder.closed:
            recorder.close()
        recorder_node.destroy_node()
        rclpy.try_shutdown()


def run_demo(settings: DemoSettings) -> int:
    """Everything after argument parsing; raises DemoError with a user-facing message on failure."""
    started = time.monotonic()
    contract_path = ensure_exported(settings.model, settings.engines_dir)
    contract = load_contract(contract_path)
    _prepare_out_dir(settings.out_dir)
    env = apply_ros_environment(log_dir=settings.out_dir / 'logs' / 'ros')  # this process and its children
    LOGGER.info('ROS_DOMAIN_ID=%s, loopback only; model %s', env['ROS_DOMAIN_ID'], contract_path)
    recording = record_run(settings, contract_path)

    from mesc3d_training import demo_figures, demo_report  # torch and matplotlib: after the run
    from mesc3d_training.demo_scenes import load_sequence

    sequence = load_sequence(settings.out_dir / 'scenes.npz')
    sent = json.loads((settings.out_dir / 'stamps.json').read_text())['frames']
    runs = {variant.name: demo_report.evaluate(sequence, sent, recording, variant.topic('points'),
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
    summary = demo_report.summarise(run, context)
    summary['comparison'] = demo_report.compare(runs)
    if run.objects:
        demo_figures.write_object_outputs(run.objects, sequence, contract.crop_padding, settings.out_dir)
        demo_figures.overview_figure(demo_figures.overview_frame(list(run.frames)), sequence,
                                     settings.out_dir / 'overview.png')
    summary['wall_time_s'] = round(time.monotonic() - started, 1)
    demo_report.write_summary(summary, settings.out_dir / 'summary.json')
    # The table is the command's result, so it goes to stdout (logging goes to stderr).
    print(demo_report.format_table(summary))
    pictures = 'overview.png, objects/*.png, clouds/*.ply, ' if run.objects else ''
    print(f'\nwrote {settings.out_dir}/: summary.json, {pictures}bag/ (rosbag2 MCAP), logs/')
    if not any(frame.objects for frame in run.frames):
        raise DemoError(f'the node published no non-empty cloud matched to a frame ({run.clouds_received} clouds '
                        f'received, {run.clouds_unmatched} with unknown stamps, {run.empty_clouds} empty); see '
                        f'{settings.out_dir}/logs/{NODE_NAME}.log')
    return 0


def _raise_interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f'signal {signum}')


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt as Ctrl-C does, so the ``finally`` clean-up (children, bag) runs for both."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


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
    interrupt_on_sigterm()
    try:
        return run_demo(settings)
    except DemoError as exc:
        LOGGER.error('demo failed: %s', exc)
        return 1
    except KeyboardInterrupt:
        LOGGER.error('demo interrupted; child processes stopped')
        return 130
