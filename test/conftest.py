"""
Session set-up shared by every test: loopback DDS for this process and every child it starts.

``pytest_configure`` runs before any test module is imported, so no rclpy context can be created with the wrong
environment. Helpers for ROS process tests live in ``ros_helpers.py``; keep this file minimal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

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
