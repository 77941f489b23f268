"""
Session set-up shared by every test: loopback DDS for this process and every child it starts.

``pytest_configure`` runs before any test module is imported, so no rclpy context can be created with the wrong
environment. Helpers for ROS process tests live in ``ros_helpers.py``, the reconstruct_node tests' rendered scene and
camera in ``node_scene.py``; the fixtures below import them only when a test asks, so keep this file minimal.
"""

from __future__ import annotations

import re
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesc3d_ros.ros_env import apply_ros_environment


def pytest_configure(config: pytest.Config) -> None:
    # ROS_DOMAIN_ID from this pytest process's pid: two suites on one host (CI, a developer) do not cross-talk.
    apply_ros_environment()


@pytest.fixture
def ros_node(request: pytest.FixtureRequest) -> Iterator:
    """Yield a fresh rclpy node (own context and executor) named after the test; use with ros_helpers.spin_until."""
    from ros_helpers import ros_node as make_node  # imports rclpy, so only for the tests that ask for it

    with make_node(re.sub(r'\W', '_', f'test_{request.node.name}')[:200]) as node:
        yield node


# ---- reconstruct_node tests (test_node.py, test_node_bad_input.py) ------------------------------------------------
@pytest.fixture(scope='module')
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_fixtures import make_random_model

    return make_random_model(tmp_path_factory.mktemp('random_model'), classes=('mug', 'bottle', 'bowl'))


@pytest.fixture(scope='module')
def scene(random_model: Path):
    """Render the tiny dataset objects in front of one camera, with their ground truth (node_scene.render_scene)."""
    from node_scene import render_scene

    # Exporting imports torch._dynamo; importing it after pyrender's EGL (llvmpipe) context exists segfaults the
    # process (Mesa and torch each bring LLVM), so the model is made first.
    return render_scene()


@pytest.fixture(scope='module')
def contract_path(random_model: Path, scene) -> Path:
    """Save the random model's contract with each class's size prior the true bounding diameter of its objects."""
    from mesc3d_ros.contract import load_contract

    contract = load_contract(random_model)
    diameter = {'mug': 2 * scene.objects[0].radius_m, 'bottle': 2 * scene.objects[1].radius_m}
    classes = tuple(dataclasses.replace(entry, size_m=diameter.get(entry.name, entry.size_m))
                    for entry in contract.classes)
    return dataclasses.replace(contract, classes=classes).save(random_model.with_name('sized.json'))


@pytest.fixture(scope='module')
def overlay_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a second params file, loaded after config/reconstruct.yaml as a deployment overlays its camera's."""
    path = tmp_path_factory.mktemp('params') / 'overlay.yaml'
    path.write_text('/**:\n  ros__parameters:\n    class_map: ["shape:bottle"]\n    diagnostics_period_s: 0.25\n'
                    '    cpu_threads: 1\n')
    return path


@pytest.fixture(scope='module')
def shared_nodes() -> Iterator:
    """Nodes kept for the module, one per parameter set: only for tests that leave their node as they found it."""
    from ros_helpers import NodeFactory

    factory = NodeFactory()
    yield factory
    factory.close()


@pytest.fixture
def fresh_nodes() -> Iterator:
    """Nodes for this test alone, stopped when it ends."""
    from ros_helpers import NodeFactory

    factory = NodeFactory()
    yield factory
    factory.close()
