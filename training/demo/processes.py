"""
The live node and its companions as child processes: the node's command line, children that die with their parent.

``mesc3d demo`` and the reliability runs start ``reconstruct_node`` as the launch file does (``--params-file
config/reconstruct.yaml``, ``-p model_path:=…``), remapped onto the scene publisher's camera topics. Children are
stopped with SIGINT (a ROS process's normal shutdown) and, on Linux, get SIGTERM from the kernel when the parent
dies, however it dies; SIGTERM in the parent raises KeyboardInterrupt so that its clean-up runs.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mesc3d_ros.ros_env import REPO_ROOT

LOGGER = logging.getLogger(__name__)

PARAMS_FILE = REPO_ROOT / 'config' / 'reconstruct.yaml'
NODE_NAME = 'reconstruct_node'
# The node's relative input names -> the scene publisher's topics (publisher.Topics), as a launch file remaps.
REMAPS = {'image': '/camera/color/image_raw', 'depth': '/camera/aligned_depth_to_color/image_raw',
          'camera_info': '/camera/color/camera_info', 'detections': '/detections'}


class DemoError(RuntimeError):
    """The demo cannot run or the node produced nothing usable; the message says why and where to look."""


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


NODE_UNDER_TEST = NodeVariant('fit', (), '')
"""The node as the launch file starts it: the parameter file as is (depth on, shapes fitted to the visible surface)."""


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
                 variant: NodeVariant = NODE_UNDER_TEST) -> list[str]:
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


def _raise_interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f'signal {signum}')


def run_command(name: str, body: Callable[[], int]) -> int:
    """
    Run a command's ``body`` and return its exit status: its own, 1 on a DemoError, 130 on Ctrl-C or SIGTERM.

    SIGTERM raises KeyboardInterrupt as Ctrl-C does, so the body's clean-up (:func:`stopped_on_exit`) runs for both.
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return body()
    except DemoError as exc:
        LOGGER.error('%s failed: %s', name, exc)
        return 1
    except KeyboardInterrupt:
        LOGGER.error('%s interrupted; child processes stopped', name)
        return 130


@contextmanager
def stopped_on_exit(children: list[Child], ros_node) -> Iterator[None]:
    """
    On leaving, however: stop ``children`` (last started first), destroy ``ros_node``, shut rclpy down.

    ``children`` is read on leaving, so children started inside the block join it by ``children.append``.
    """
    import rclpy

    try:
        yield
    finally:
        for child in reversed(children):
            child.stop()
        ros_node.destroy_node()
        rclpy.try_shutdown()
