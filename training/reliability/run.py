"""
What every reliability run of the live node shares: the model, the node process, a known-good frame, the options.

The runs reuse the demo's pieces: ``demo.model.ensure_exported`` for the model, ``demo.processes.start_child`` /
``node_command`` for the node process, ``demo.publisher`` for the frames. Each writes its result as JSON under
``--out`` and, with ``--write-docs``, replaces its block in docs/benchmarks.md (``reports.markdown_blocks``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from mesc3d_ros.ros_env import REPO_ROOT, apply_ros_environment
from mesc3d_training import SHIPPED_MODEL
from mesc3d_training.demo.model import ensure_exported
from mesc3d_training.demo.processes import NODE_NAME, PARAMS_FILE, Child, DemoError, cpu_model

BENCHMARKS_DOC = REPO_ROOT / 'docs' / 'benchmarks.md'
MONITOR_NODE = 'mesc3d_reliability_monitor'


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


def spin_until(executor, predicate, timeout_s: float, node: Child | None = None) -> bool:
    """Spin until ``predicate()``; False on timeout. Raises DemoError if ``node`` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        if node is not None and node.popen.poll() is not None:
            raise DemoError(f'{NODE_NAME} exited with status {node.popen.returncode}; end of its log:\n{node.tail()}')
        executor.spin_once(timeout_sec=0.05)
    return True


@dataclass(frozen=True, eq=False)
class GoodFrame:
    """A valid frame of the demo stream; its objects must come back after the fuzzing."""

    image: object
    detections: object
    camera_info: object
    num_objects: int
    depth: object
    """16UC1 millimetres, registered to ``image``."""


def good_frame(ctx: RunContext, seed: int) -> GoodFrame:
    """Render one demo frame with two test-split objects of the model's classes, as its four messages."""
    from std_msgs.msg import Header

    from mesc3d_training.demo import publisher, scenes

    pool = publisher.load_demo_objects(publisher.demo_categories(ctx.contract_path), count=2, seed=seed)
    sequence = scenes.render_sequence(pool, scenes.SceneSettings(min_objects=2, seed=seed),
                                      num_scenes=1, rate_hz=1.0, frames_per_scene=1, num_frames=1)
    image, depth, camera_info, detections = publisher.frame_messages(sequence, 0, Header(frame_id='fuzz_camera'))
    return GoodFrame(image, detections, camera_info, len(sequence.scenes[0].objects), depth)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options every live-node run (soak, fuzz, attack) shares: model, output, seed, docs."""
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
