"""
Helpers for tests that run real ROS 2 processes: start a console script, wait on messages, never on sleeps.

``conftest.py`` has already applied ``mesc3d_ros.ros_env`` (loopback DDS, a per-run ROS_DOMAIN_ID, logs in build/)
to this process, so every node made here and every child started here shares it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

VENV_BIN = Path(sys.executable).parent


def venv_script(name: str) -> Path:
    """Path of a console script installed in the venv that runs the tests, e.g. ``box_cloud_node``."""
    path = VENV_BIN / name
    if not path.is_file():
        raise FileNotFoundError(f'console script {name!r} not found at {path}; is the package installed (make setup)?')
    return path


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str = 'condition', poll_s: float = 0.02) -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout_s} s waiting for {what}')
        time.sleep(poll_s)


def spin_until(node: Node, predicate: Callable[[], bool], timeout_s: float, what: str = 'condition',
               on_tick: Callable[[], None] | None = None, tick_s: float = 0.1) -> None:
    """
    Spin ``node``'s executor until ``predicate`` is true, calling ``on_tick`` every ``tick_s`` (e.g. to publish).

    The node must belong to an executor (as those from :func:`ros_node` do). Raises TimeoutError naming ``what``.
    """
    executor = node.executor
    if executor is None:
        raise RuntimeError(f'node {node.get_name()!r} is not added to an executor; use ros_node()')
    deadline = time.monotonic() + timeout_s
    next_tick = time.monotonic()
    while not predicate():
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f'timed out after {timeout_s} s waiting for {what}')
        if on_tick is not None and now >= next_tick:
            on_tick()
            next_tick = now + tick_s
        executor.spin_once(timeout_sec=min(0.02, max(deadline - now, 0.0)))


@contextlib.contextmanager
def ros_node(name: str) -> Iterator[Node]:
    """Create a node in its own rclpy context with its own executor; shut everything down on exit."""
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)  # node.executor is a weak reference: this frame keeps the executor alive
    try:
        yield node
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


@dataclass
class ChildProcess:
    """A started command whose stdout and stderr go to one temporary file."""

    popen: subprocess.Popen
    log: IO[bytes]

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr interleaved)."""
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors='replace')

    def wait_exit(self, timeout_s: float) -> int:
        """Exit code of the process, waiting at most ``timeout_s``; TimeoutError (with its output) otherwise."""
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f'{self.popen.args} still running after {timeout_s} s; output:\n{self.output()}') \
                from exc

    def stop(self, timeout_s: float = 5.0) -> int:
        """SIGINT (a node's normal shutdown), then SIGKILL if it has not exited after ``timeout_s``."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


@contextlib.contextmanager
def start_process(cmd: Sequence[str | os.PathLike], env: dict[str, str] | None = None) -> Iterator[ChildProcess]:
    """Run ``cmd`` for the duration of the block; stop it on exit and attach its output to any exception raised."""
    with tempfile.TemporaryFile() as log:
        popen = subprocess.Popen([str(part) for part in cmd], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env)
        child = ChildProcess(popen=popen, log=log)
        try:
            yield child
        except BaseException as exc:
            child.stop()
            exc.add_note(f'--- output of {" ".join(str(part) for part in cmd)} (exit {popen.returncode}) ---\n'
                         f'{child.output()}')
            raise
        finally:
            child.stop()


def ros_argument(value: object) -> str:
    """Write a parameter value as ``-p name:=value`` takes it (YAML): lower-case booleans, lists as flow sequences."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(repr(item) for item in value) + ']'
    return str(value)


@dataclass
class RunningNode:
    """A reconstruct_node process and the namespace its topics and services live under."""

    namespace: str
    process: ChildProcess

    @property
    def name(self) -> str:
        """Fully qualified node name, e.g. for parameter and lifecycle services."""
        return f'{self.namespace}/reconstruct_node'


class NodeFactory:
    """
    reconstruct_node processes by parameter set: calling it with a set it has started before returns that node.

    Each process runs under a namespace of its own (``/reconstruct_<n>``), so nodes of different sets never share
    topics. Module-scoped, a factory shares a node between the tests that ask for identical parameters (tests that
    leave the node as they found it); function-scoped, every test gets fresh ones (a test that reconfigures its node,
    or needs one that has seen no input). ``close`` stops them all and checks each ended cleanly on SIGINT.
    """

    _numbers = itertools.count()  # namespaces stay unique across factories in one test session

    def __init__(self) -> None:
        self._nodes: dict[tuple, RunningNode] = {}
        self._stack = contextlib.ExitStack()

    def __call__(self, params_files: Sequence[Path], **params: object) -> RunningNode:
        """Return the node started with ``--params-file`` each of ``params_files``, then ``-p`` each of ``params``."""
        key = (tuple(map(str, params_files)), tuple(sorted((name, repr(value)) for name, value in params.items())))
        if key not in self._nodes:
            namespace = f'/reconstruct_{next(self._numbers)}'
            self._nodes[key] = RunningNode(namespace, self._stack.enter_context(start_process(
                reconstruct_node_command(namespace, params_files, params))))
        return self._nodes[key]

    def close(self) -> None:
        """Stop every node this factory started (SIGINT); AssertionError naming any that did not exit 0."""
        exits = {node.namespace: node.process.stop() for node in self._nodes.values()}
        self._stack.close()
        self._nodes.clear()
        assert set(exits.values()) <= {0}, f'SIGINT should end every node cleanly (exit 0): {exits}'


def reconstruct_node_command(namespace: str, params_files: Sequence[Path],
                             params: Mapping[str, object]) -> list[str | Path]:
    """reconstruct_node's console script as a user starts it, under ``namespace``."""
    cmd: list[str | Path] = [venv_script('reconstruct_node'), '--ros-args', '-r', f'__ns:={namespace}']
    for path in params_files:
        cmd += ['--params-file', path]
    for name, value in params.items():
        cmd += ['-p', f'{name}:={ros_argument(value)}']
    return cmd
