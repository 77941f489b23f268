"""The one place that decides how a process of this project talks DDS.

Every test, script and the demo starts ROS processes with :func:`ros_environment` so that DDS traffic stays on
loopback (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` plus the Fast DDS profile in ``config/``), logs land inside
the build tree instead of ``$HOME/.ros/log``, and parallel runs do not cross-talk (their own ``ROS_DOMAIN_ID``).
A deployed node on a robot does not call this: there the system's ROS environment is used as configured.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FASTDDS_PROFILE = REPO_ROOT / 'config' / 'fastdds_loopback.xml'
DEFAULT_LOG_DIR = REPO_ROOT / 'build' / 'ros_log'

# Domain ids above 101 collide with the Linux ephemeral port range; 0 is everyone's default, so avoid it.
_FIRST_DOMAIN, _LAST_DOMAIN = 10, 100


def pick_domain_id() -> int:
    """A per-process domain id, so two test runs on one host (CI and a developer) do not cross-talk."""
    return _FIRST_DOMAIN + os.getpid() % (_LAST_DOMAIN - _FIRST_DOMAIN + 1)


def ros_environment(domain_id: int | None = None, log_dir: Path | None = None) -> dict[str, str]:
    """Environment variables that keep a ROS 2 process on loopback with this project's DDS profile."""
    if not FASTDDS_PROFILE.is_file():
        raise FileNotFoundError(f'Fast DDS profile missing: {FASTDDS_PROFILE}')
    log_dir = DEFAULT_LOG_DIR if log_dir is None else log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    return {
        'ROS_DOMAIN_ID': str(pick_domain_id() if domain_id is None else domain_id),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
        'ROS_LOG_DIR': str(log_dir),
        'FASTRTPS_DEFAULT_PROFILES_FILE': str(FASTDDS_PROFILE),  # Fast DDS 2.x (Jazzy, Humble)
        'FASTDDS_DEFAULT_PROFILES_FILE': str(FASTDDS_PROFILE),  # Fast DDS 3.x (Kilted)
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
