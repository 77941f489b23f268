"""
The package as a ROS user gets it: built by colcon, started by ``ros2 launch``, read by upstream sensor_msgs_py.

Runs the real upstream Jazzy ``launch`` / ``launch_ros`` / ``ros2cli`` / ``colcon`` that ``make test`` installs from
``../shared/ros2-jazzy-src`` (scripts/install_ros_tools.sh); where that folder is absent (a fresh clone) the module
skips. colcon builds this checkout once per module into a temporary workspace; every launch then runs the
**installed** copy (``source install/setup.bash``, no PYTHONPATH into the checkout) with no ``model:=``, so the node
finds the shipped model through the ament index. Each ``ros2 launch`` runs in its own process group, which is
signalled as a whole at the end (launch alone would orphan its node) and checked to be empty afterwards.
The node answers frames published by this test process (a foreign publisher); the model is the shipped one, so the
shapes are real but not judged here (test_shipped_model.py and the demo do that): layout, frame, stamp and the
topics are.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# ../shared/ros2-jazzy-src beside the checkout (the Makefile's ROS_TOOLS_SRC; a git worktree elsewhere sets it).
ROS_TOOLS_SRC = Path(os.environ.get('ROS_TOOLS_SRC') or REPO.parent / 'shared' / 'ros2-jazzy-src')
VENV_BIN = Path(sys.executable).parent
if not ROS_TOOLS_SRC.is_dir():
    pytest.skip(f'{ROS_TOOLS_SRC} is absent: no upstream launch/ros2cli/colcon to test with (a ROS install brings '
                f'them; see README Install)', allow_module_level=True)
_missing = [tool for tool in ('ros2', 'colcon') if not (VENV_BIN / tool).is_file()]
try:
    import launch_ros  # noqa: F401  (only checks that the tools are installed)
    from sensor_msgs_py import point_cloud2
except ImportError as exc:
    _missing.append(str(exc))
if _missing:
    pytest.fail(f'{ROS_TOOLS_SRC} is there but the ROS tools are not installed in {VENV_BIN.parent} ({_missing}): '
                f'run `make ros-tools` (make test does)', pytrace=False)

from builtin_interfaces.msg import Time  # noqa: E402  (after the skip: rclpy types only where ROS tools are)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from mesc3d_ros.conversions import (CameraIntrinsics, arrays_to_detections, intrinsics_to_camera_info,  # noqa: E402
                                    numpy_to_image)
from mesc3d_ros.package_share import DEFAULT_MODEL  # noqa: E402
from mesc3d_ros.node_params import PARAMETERS  # noqa: E402
from ros_helpers import spin_until, wait_for  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PACKAGE = 'mesc3d_ros'
COPY_IGNORE = shutil.ignore_patterns('.venv', 'build', 'install', 'log', 'data', 'runs', 'demo_out', 'engines', '.git',
                                     'mesc3d_training', '*.egg-info', '__pycache__', '.pytest_cache', '.hypothesis',
                                     'reconstruct_out')
WIDTH, HEIGHT = 320, 240
K = np.array([[300.0, 0.0, WIDTH / 2], [0.0, 300.0, HEIGHT / 2], [0.0, 0.0, 1.0]])
FRAME_ID = 'camera_color_optical_frame'
BOXES = np.array([[60.0, 50.0, 170.0, 200.0], [190.0, 80.0, 290.0, 190.0]])  # xyxy pixels
CLASSES = ['mug', 'bottle']
START_TIMEOUT_S = 90.0  # model load + discovery on a loaded 2-core machine


@dataclass(frozen=True)
class Workspace:
    root: Path
    install: Path
    """install/ of the colcon workspace (merged per package: install/mesc3d_ros/...)."""

    @property
    def share(self) -> Path:
        return self.install / PACKAGE / 'share' / PACKAGE


def sourced(workspace: Workspace, *command: str) -> list[str]:
    """``command`` run by bash after ``source install/setup.bash``, as a ROS user runs it."""
    return ['bash', '-c', f'source {workspace.install}/setup.bash && exec "$@"', 'sourced', *command]


def user_environment() -> dict[str, str]:
    """Return this process's loopback DDS settings, the venv's ROS on the ament path, and nothing from the checkout."""
    env = {key: value for key, value in os.environ.items() if key not in ('PYTHONPATH', 'AMENT_PREFIX_PATH')}
    env['AMENT_PREFIX_PATH'] = str(VENV_BIN.parent)  # where the pip wheels' ROS packages are registered
    env['PATH'] = f'{VENV_BIN}{os.pathsep}{env.get("PATH", "")}'
    return env


@pytest.fixture(scope='module')
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Return this checkout copied to ``<tmp>/src/mesc3d_ros`` and built with ``colcon build``, once for the module."""
    root = tmp_path_factory.mktemp('colcon_ws')
    shutil.copytree(REPO, root / 'src' / PACKAGE, ignore=COPY_IGNORE, symlinks=True)
    result = subprocess.run([str(VENV_BIN / 'colcon'), 'build', '--event-handlers', 'console_direct-'], cwd=root,
                            env=user_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f'colcon build failed:\n{result.stdout}\n{result.stderr}'
    return Workspace(root=root, install=root / 'install')


@dataclass
class Launch:
    popen: subprocess.Popen
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors='replace')

    def wait_output(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> re.Match:
        """Return the first match of ``pattern`` in launch's output; TimeoutError (with the output) otherwise."""
        deadline = time.monotonic() + timeout_s
        while (match := re.search(pattern, self.output())) is None:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f'no {pattern!r} in the output of ros2 launch (exit {self.popen.poll()}):\n'
                                   f'{self.output()}')
            time.sleep(0.1)
        return match


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def ros2_launch(workspace: Workspace, *arguments: str) -> Iterator[Launch]:
    """
    ``ros2 launch mesc3d_ros reconstruct.launch.py ARGS`` in its own process group.

    On exit SIGINT to the group (what Ctrl-C does), SIGKILL after 20 s, and a check that no process of the group is left
    (no orphan node).
    """
    with tempfile.NamedTemporaryFile('wb', suffix='.log', delete=False) as log:
        popen = subprocess.Popen(sourced(workspace, 'ros2', 'launch', PACKAGE, 'reconstruct.launch.py', *arguments),
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=user_environment(), cwd=workspace.root, start_new_session=True)
    launch = Launch(popen, Path(log.name))
    pgid = popen.pid  # start_new_session: the group id is the leader's pid
    try:
        yield launch
    except BaseException as exc:
        exc.add_note(f'--- ros2 launch {" ".join(arguments)} ---\n{launch.output()}')
        raise
    finally:
        if popen.poll() is None:
            os.killpg(pgid, signal.SIGINT)
        try:
            popen.wait(timeout=20)
            wait_for(lambda: not _group_alive(pgid), 20, 'the launched node to exit after launch')
        except (subprocess.TimeoutExpired, TimeoutError):
            os.killpg(pgid, signal.SIGKILL)
            popen.wait()
            raise AssertionError(f'ros2 launch {" ".join(arguments)} left processes after SIGINT:\n{launch.output()}')
        finally:
            launch.log_path.unlink(missing_ok=True)


def frame_messages(stamp: Time, prefix: str = '') -> tuple[CameraInfo, Image, Detection2DArray]:
    """One camera frame with two detections, all with the same header (what a camera + detector send)."""
    header = Header(stamp=stamp, frame_id=FRAME_ID)
    rng = np.random.default_rng(stamp.nanosec)
    rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)  # (H, W, 3) uint8: texture for the crops
    return (intrinsics_to_camera_info(CameraIntrinsics(k=K, width=WIDTH, height=HEIGHT), header),
            numpy_to_image(rgb, 'rgb8', header), arrays_to_detections(BOXES, CLASSES, np.array([0.9, 0.8]), header))


def publish_until_cloud(node, topics: dict[str, str], points_topic: str, timeout_s: float) -> PointCloud2:
    """Publish frames (new stamp each) on ``topics`` until a cloud arrives on ``points_topic``; return it."""
    publishers = {name: node.create_publisher(kind, topics[name], 10)
                  for name, kind in (('camera_info', CameraInfo), ('image', Image), ('detections', Detection2DArray))}
    clouds: list[PointCloud2] = []
    node.create_subscription(PointCloud2, points_topic, clouds.append, 10)
    sent: dict[tuple[int, int], None] = {}

    def publish() -> None:
        stamp = node.get_clock().now().to_msg()
        info, image, detections = frame_messages(stamp)
        sent[(stamp.sec, stamp.nanosec)] = None
        publishers['camera_info'].publish(info)
        publishers['image'].publish(image)
        publishers['detections'].publish(detections)

    spin_until(node, lambda: bool(clouds), timeout_s, f'a cloud on {points_topic}', on_tick=publish, tick_s=0.5)
    cloud = clouds[0]
    assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) in sent, 'the cloud carries no published stamp'
    return cloud


# ---- colcon ----------------------------------------------------------------------------------------------------
def test_colcon_build_installs_the_package_where_ros2_finds_it(workspace: Workspace):
    prefix = workspace.install / PACKAGE
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE).is_file()
    for executable in ('reconstruct_node', 'box_cloud_node', 'reconstruct_image'):
        assert os.access(prefix / 'lib' / PACKAGE / executable, os.X_OK), executable
    for part in ('launch/reconstruct.launch.py', 'config/reconstruct.yaml', 'config/fastdds_loopback.xml',
                 'config/mesc3d.rviz', f'models/{DEFAULT_MODEL}.json', f'models/{DEFAULT_MODEL}.onnx'):
        assert (workspace.share / part).is_file(), part
    result = subprocess.run(sourced(workspace, 'ros2', 'pkg', 'prefix', PACKAGE), env=user_environment(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and Path(result.stdout.strip()) == prefix, result


def test_ros_env_of_an_installed_copy_names_the_installed_dds_profile(workspace: Workspace, tmp_path: Path):
    result = subprocess.run(sourced(workspace, sys.executable, '-m', 'mesc3d_ros.ros_env'),
                            env=user_environment(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    exports = dict(re.findall(r'^export (\w+)=(.*)$', result.stdout, re.M))
    profile = Path(exports['FASTRTPS_DEFAULT_PROFILES_FILE'])
    assert profile == workspace.share / 'config' / 'fastdds_loopback.xml' and profile.is_file()
    assert exports['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'


# ---- ros2 launch -----------------------------------------------------------------------------------------------
def test_show_args_lists_every_argument_with_its_description(workspace: Workspace):
    result = subprocess.run(sourced(workspace, 'ros2', 'launch', PACKAGE, 'reconstruct.launch.py', '--show-args'),
                            env=user_environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    shown = dict(re.findall(r"^    '(\w+)':\n        (.+)$", result.stdout, re.M))
    assert set(shown) == {'model', 'backend', 'use_depth', 'image', 'detections', 'camera_info', 'depth',
                          'namespace', 'params_file', 'rviz'}, result.stdout
    assert all(len(text) > 15 for text in shown.values()), shown
    assert "(default: '')" in result.stdout  # model/backend/use_depth: empty = keep the params file's value


def test_launch_without_model_answers_a_foreign_publisher_and_survives_a_missing_rviz2(workspace: Workspace,
                                                                                       ros_node):
    topics = {'image': '/cam/color/image_raw', 'camera_info': '/cam/color/camera_info', 'detections': '/det'}
    with ros2_launch(workspace, *(f'{name}:={topic}' for name, topic in topics.items()), 'rviz:=true') as launch:
        launch.wait_output(r'rviz2 is not installed')
        configured = launch.wait_output(r'configured: model \S+ from (\S+\.json)')
        assert Path(configured.group(1)) == workspace.share / 'models' / f'{DEFAULT_MODEL}.json'
        launch.wait_output(r'active: ')
        cloud = publish_until_cloud(ros_node, topics, '/mesc3d/points', START_TIMEOUT_S)
        assert launch.popen.poll() is None, 'launch ended although only RViz was missing'
    # Decoded by upstream sensor_msgs_py, not by our own conversions.
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ('x', 0, PointField.FLOAT32, 1), ('y', 4, PointField.FLOAT32, 1), ('z', 8, PointField.FLOAT32, 1),
        ('object_index', 12, PointField.UINT32, 1)]
    points = point_cloud2.read_points(cloud, field_names=('x', 'y', 'z', 'object_index'), skip_nans=False)
    assert points.dtype.names == ('x', 'y', 'z', 'object_index')
    assert [points.dtype[name] for name in points.dtype.names] == [np.dtype('<f4')] * 3 + [np.dtype('<u4')]
    assert cloud.header.frame_id == FRAME_ID and cloud.height == 1 and not cloud.is_bigendian
    num_points = len(points) // len(BOXES)
    assert len(points) == num_points * len(BOXES) and num_points > 0
    assert np.array_equal(points['object_index'], np.repeat(np.arange(len(BOXES), dtype=np.uint32), num_points))
    xyz = np.stack([points['x'], points['y'], points['z']], axis=1)  # (M, 3) metres, optical frame
    assert np.isfinite(xyz).all() and (xyz[:, 2] > 0).all()  # in front of the camera
    for index, box in enumerate(BOXES):  # each object's centroid projects inside its own box
        centroid = xyz[points['object_index'] == index].mean(axis=0)
        u, v = (K @ centroid)[:2] / centroid[2]
        assert box[0] <= u <= box[2] and box[1] <= v <= box[3], (index, u, v, box)


def test_params_file_values_hold_unless_an_argument_is_given_and_missing_depth_is_reported(
        workspace: Workspace, tmp_path: Path, ros_node):
    params = yaml.safe_load((REPO / 'config' / 'reconstruct.yaml').read_text())
    params['/**']['ros__parameters'].update(use_depth=True, backend='onnxruntime', diagnostics_period_s=0.5)
    params_file = tmp_path / 'my_params.yaml'
    params_file.write_text(yaml.safe_dump(params))
    statuses: list[DiagnosticStatus] = []
    ros_node.create_subscription(DiagnosticArray, '/diagnostics', lambda msg: statuses.extend(msg.status), 10)
    with ros2_launch(workspace, f'params_file:={params_file}') as launch:
        launch.wait_output(r'configured: .*backend onnxruntime\[.*depth on')  # the file's values, not defaults
        launch.wait_output(r'\[no_depth\] use_depth is true but no depth image arrived on /depth', timeout_s=30)

        def no_depth_status() -> bool:
            return any(s.level == DiagnosticStatus.WARN and any(kv.key == 'issue_no_depth' for kv in s.values)
                       for s in statuses if s.name.startswith('/reconstruct_node'))
        spin_until(ros_node, no_depth_status, 30, 'a WARN diagnostics status counting issue_no_depth')
    with ros2_launch(workspace, f'params_file:={params_file}', 'use_depth:=false', 'backend:=auto') as launch:
        launch.wait_output(r'configured: .*depth off')  # the arguments, given, win over the file


def test_namespace_moves_the_node_and_its_topics(workspace: Workspace, ros_node):
    with ros2_launch(workspace, 'namespace:=cam1') as launch:
        launch.wait_output(r'active: /cam1/camera_info, /cam1/image, /cam1/detections -> /cam1/mesc3d/points')
        cloud = publish_until_cloud(ros_node, {'image': '/cam1/image', 'camera_info': '/cam1/camera_info',
                                               'detections': '/cam1/detections'}, '/cam1/mesc3d/points',
                                    START_TIMEOUT_S)
    assert cloud.width > 0


def test_declared_parameters_and_launch_overrides_agree():
    """The three overridable launch arguments name parameters the node declares (checked without launch too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location('reconstruct_launch', REPO / 'launch' / 'reconstruct.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.OVERRIDES.values()) <= {p.name for p in PARAMETERS}
    assert module.generate_launch_description().entities  # builds with the real launch
