"""
The one place that decides how a process of this project talks DDS.

Every test, script and the demo starts ROS processes with :func:`ros_environment` so that DDS traffic stays on
loopback (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` plus the Fast DDS profile in ``config/``), logs land inside
the build tree instead of ``$HOME/.ros/log``, and parallel runs do not cross-talk (their own ``ROS_DOMAIN_ID``).
A deployed node on a robot does not call this: there the system's ROS environment is used as configured.
The profile is found through :mod:`mesc3d_ros.package_share`, so this works from a checkout and from an install
(``share/mesc3d_ros/config``) alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from mesc3d_ros.package_share import share_file, source_root

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout (training code and scripts only run from one; the runtime uses package_share)."""

# Domain ids above 101 collide with the Linux ephemeral port range; 0 is everyone's default, so avoid it.
_FIRST_DOMAIN, _LAST_DOMAIN = 10, 100


def pick_domain_id() -> int:
    """Return a per-process domain id, so two test runs on one host (CI and a developer) do not cross-talk."""
    return _FIRST_DOMAIN + os.getpid() % (_LAST_DOMAIN - _FIRST_DOMAIN + 1)


def default_log_dir() -> Path:
    """``build/ros_log`` of a checkout; for an installed copy the user's cache (its prefix may be read-only)."""
    root = source_root()
    if root is not None:
        return root / 'build' / 'ros_log'
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'mesc3d_ros' / 'ros_log'


def ros_environment(domain_id: int | None = None, log_dir: Path | None = None) -> dict[str, str]:
    """Environment variables that keep a ROS 2 process on loopback with this project's DDS profile."""
    profile = share_file('config', 'fastdds_loopback.xml')
    log_dir = default_log_dir() if log_dir is None else log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    return {
        'ROS_DOMAIN_ID': str(pick_domain_id() if domain_id is None else domain_id),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
        'ROS_LOG_DIR': str(log_dir),
        'FASTRTPS_DEFAULT_PROFILES_FILE': str(profile),  # Fast DDS 2.x (Jazzy, Humble)
        'FASTDDS_DEFAULT_PROFILES_FILE': str(profile),  # Fast DDS 3.x (Kilted)
    }


def apply_ros_environment(domain_id: int | None = None, log_dir: Path | None = None) -> dict[str, str]:
    """Set :func:`ros_environment` in this process (before rclpy is initialised) and return it."""
    env = ros_environment(domain_id, log_dir)
    os.environ.update(env)
    os.environ.pop('ROS_LOCALHOST_ONLY', None)  # deprecated; conflicts with the discovery range
    return env


def main() -> None:
    """Print ``export`` lines for shells: ``eval "$(python -m mesc3d_ros.ros_env)"``."""
    for key, value in ros_environment().items():
        print(f'export {key}={value}')


if __name__ == '__main__':
    main()
