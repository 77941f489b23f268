"""
``mesc3d demo`` end to end: the real command, the real node process, real DDS, real renders and a real bag.

The model is a random-weight tiny MESC-3D (``model_fixtures.make_random_model``) with the real bindings, so the
shapes it predicts are meaningless and the scores are not checked; what is checked is that the run works: the node
answered frames of the stream, the outputs were matched to frames and ground truth, every output file exists and
the bag reads back. The failure paths check the exit status, the message and that no child process is left over.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import psutil
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import PointCloud2

from mesc3d_ros.contract import file_sha256

from model_fixtures import make_random_model
from ros_helpers import venv_script

pytestmark = [pytest.mark.slow, pytest.mark.ros]

TOPICS = {'/camera/color/image_raw', '/camera/aligned_depth_to_color/image_raw', '/camera/color/camera_info',
          '/detections', '/mesc3d/points', '/mesc3d/objects', '/diagnostics',
          # the comparison instances of the node (demo.VARIANTS): without the shape fit, and the fused cloud
          '/mesc3d/no_fit/points', '/mesc3d/no_fit/objects', '/mesc3d/no_fit/diagnostics',
          '/mesc3d/fused/points', '/mesc3d/fused/objects', '/mesc3d/fused/diagnostics'}


def run_demo(args: list[str], timeout_s: float = 150.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv_script('mesc3d')), 'demo', *args], capture_output=True, text=True,
                          timeout=timeout_s)


def leftover_processes(marker: str) -> list[str]:
    """Command lines of processes still running that mention ``marker`` (the run's unique output folder)."""
    found = []
    for process in psutil.process_iter(['cmdline']):
        cmdline = ' '.join(process.info['cmdline'] or [])
        if marker in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture(scope='module')
def contract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Classes the packaged catalogs have small test-split objects of, so the stream is quick to render.
    return make_random_model(tmp_path_factory.mktemp('demo_model'), classes=('mug', 'bottle', 'bowl'))


def test_demo_runs_end_to_end_and_writes_every_output(contract, tmp_path):
    out = tmp_path / 'demo_out'
    result = run_demo(['--model', str(contract), '--out', str(out), '--duration-s', '3', '--objects', '3',
                       '--backend', 'onnxruntime'])
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'frames sent / clouds received' in result.stdout and '\n  all ' in result.stdout, result.stdout

    summary = json.loads((out / 'summary.json').read_text())
    assert summary['frames_sent'] == 45  # 3 s at 15 Hz
    assert summary['clouds_matched'] > 0 and summary['clouds_unmatched'] == 0
    assert summary['objects_reconstructed'] > 0 and summary['objects_unmatched'] == 0
    assert summary['latency_ms']['p50'] > 0
    assert summary['metrics']['cd_l1_m'] > 0 and set(summary['metrics_per_category']) <= {'mug', 'bottle', 'bowl'}
    # With and without the fit, and the fused cloud, scored on the same frames.
    comparison = summary['comparison']
    assert comparison['scenes'] > 0 and set(comparison['variants']) == {'fit', 'no_fit', 'fused'}
    assert all(rows['all']['views'] > 0 for rows in comparison['variants'].values())
    assert 'answered by every node' in result.stdout
    assert (out / 'overview.png').stat().st_size > 10_000
    figures, clouds = sorted((out / 'objects').glob('*.png')), sorted((out / 'clouds').glob('*.ply'))
    assert figures and len(clouds) == 2 * len(figures)  # prediction and ground truth per object

    with Reader(out / 'bag') as bag:
        counts = {connection.topic: connection.msgcount for connection in bag.connections}
        assert set(counts) == TOPICS
        assert counts['/camera/color/image_raw'] == summary['frames_sent']
        assert counts['/mesc3d/points'] == summary['clouds_received']
        points = [c for c in bag.connections if c.topic == '/mesc3d/points']
        _, _, raw = next(bag.messages(connections=points))
    assert deserialize_message(raw, PointCloud2).width > 0  # raw CDR, readable by rclpy as recorded
    assert not leftover_processes(str(out))


def test_missing_model_exits_non_zero_naming_the_file(tmp_path):
    missing = tmp_path / 'no_such_model.json'
    result = run_demo(['--model', str(missing), '--out', str(tmp_path / 'out')], timeout_s=60)
    assert result.returncode != 0
    assert 'model contract unusable' in result.stderr and str(missing) in result.stderr, result.stderr


def test_node_failing_to_start_stops_the_demo_and_its_children(contract, tmp_path):
    params = tmp_path / 'bad.yaml'
    params.write_text('/**:\n  ros__parameters:\n    max_batch: 0\n')  # out of range: the node refuses to start
    out = tmp_path / 'demo_out'
    result = run_demo(['--model', str(contract), '--out', str(out), '--params-file', str(params),
                       '--duration-s', '3', '--objects', '2'], timeout_s=90)
    assert result.returncode != 0
    # All three node instances (as configured, no_fit, fused) get the bad file; whichever exits first is reported.
    assert re.search(r'reconstruct_node(_no_fit|_fused)? exited with status 1', result.stderr), result.stderr
    assert 'max_batch' in result.stderr, result.stderr
    assert not leftover_processes(str(out))


def copy_checkpoint(contract: Path, folder: Path) -> Path:
    """Copy the fixture's checkpoint files (``tiny.*``) into ``folder``, which is returned."""
    # The fixture saved its checkpoint beside its engines folder (model_fixtures.make_random_model).
    folder.mkdir()
    for path in (contract.parent.parent / 'checkpoint').glob('tiny.*'):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_checkpoint_is_exported_once_and_again_when_it_changes(contract, tmp_path):
    from mesc3d_training.demo.model import _export_is_current, ensure_exported

    checkpoint = copy_checkpoint(contract, tmp_path / 'models')
    engines = tmp_path / 'engines'
    exported = ensure_exported(checkpoint / 'tiny.safetensors', engines)
    assert exported == engines / 'tiny.json' and (engines / 'tiny.onnx').is_file()
    stamp = (engines / 'tiny.onnx').stat().st_mtime_ns
    assert ensure_exported(checkpoint / 'tiny', engines) == exported
    assert (engines / 'tiny.onnx').stat().st_mtime_ns == stamp  # current: not exported again

    recorded = json.loads((engines / 'tiny.source.json').read_text())
    meta = checkpoint / 'tiny.yaml'
    meta.write_text(meta.read_text() + '# edited\n')  # other checkpoint bytes: the export is stale
    changed = {**recorded, 'meta_sha256': file_sha256(meta)}
    assert not _export_is_current(exported, engines / 'tiny.source.json', changed)
    (engines / 'tiny.onnx').write_bytes(b'truncated')  # a damaged export is stale too
    assert not _export_is_current(exported, engines / 'tiny.source.json', recorded)


def test_a_shipped_checkpoint_runs_from_its_deployable_form_until_it_changes(contract, tmp_path):
    from mesc3d_training.demo.model import ensure_exported
    from mesc3d_training.ship import ship

    models = copy_checkpoint(contract, tmp_path / 'models')
    shipped = ship(models / 'tiny.safetensors', int8=False)
    assert not (models / 'tiny.int8.onnx').exists()
    engines = tmp_path / 'engines'
    assert ensure_exported(models / 'tiny.yaml', engines) == shipped == models / 'tiny.json'
    assert not engines.exists()  # nothing exported: the node runs what ships
    meta = models / 'tiny.yaml'
    meta.write_text(meta.read_text() + '# edited\n')  # the shipped form no longer matches these bytes
    assert ensure_exported(models / 'tiny.yaml', engines) == engines / 'tiny.json'
