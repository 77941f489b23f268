"""
The runtime finds its share files (model, DDS profile, params, RViz config) however the package is installed.

- ``pip install .`` (a wheel into a fresh prefix, no ament environment): share/mesc3d_ros beside the prefix;
- ``make setup``'s editable install: scripts/register_editable.sh links the checkout into the venv's ament index,
  so ``ros2 launch mesc3d_ros ...`` finds it. Run on a stand-in venv prefix (the shared venv's own install is never
  touched), then with the real ``ros2 launch`` where the upstream tools are installed.
colcon installs are tested with the real colcon in test_ros_tools.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mesc3d_ros.package_share import DEFAULT_MODEL
from ros_helpers import wait_for

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PROBE = ('from mesc3d_ros.package_share import share_dir, resolve_model; from mesc3d_ros.ros_env import '
         'ros_environment; from mesc3d_ros.inference import create_backend; import mesc3d_ros; '
         'print(mesc3d_ros.__file__); print(share_dir()); print(resolve_model("")); '
         'print(ros_environment()["FASTRTPS_DEFAULT_PROFILES_FILE"]); print(create_backend(resolve_model("")).name)')


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def clean_environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ('PYTHONPATH', 'AMENT_PREFIX_PATH')}
    return {**env, **extra}


def venv_install() -> str:
    """Where the venv's own mesc3d_ros install points (pip show), to check that the test leaves it alone."""
    result = subprocess.run([sys.executable, '-m', 'pip', 'show', 'mesc3d_ros'], capture_output=True, text=True,
                            env=clean_environment(), timeout=120)
    return '\n'.join(line for line in result.stdout.splitlines() if line.startswith(('Location', 'Editable')))


@pytest.mark.slow
def test_pip_install_finds_the_shipped_model_and_dds_profile_without_ament(tmp_path: Path):
    source = tmp_path / 'src'
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        '.venv', 'build', 'data', 'runs', 'demo_out', 'engines', '.git', 'mesc3d_training', '*.egg-info',
        '__pycache__', '.pytest_cache', '.hypothesis'))
    prefix = tmp_path / 'prefix'
    before = venv_install()
    # --ignore-installed: without it pip first uninstalls the venv's own (editable) mesc3d_ros, prefix or not.
    result = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                             '--no-compile', '--ignore-installed', '--prefix', str(prefix), str(source)],
                            env=clean_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert before == venv_install(), "pip install --prefix changed the venv's own mesc3d_ros install"
    (site,) = prefix.glob('lib/python3*/site-packages')
    result = subprocess.run([sys.executable, '-c', PROBE], env=clean_environment(PYTHONPATH=str(site)),
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    module, share, model, profile, backend = result.stdout.split('\n')[:5]
    assert Path(module).is_relative_to(site)  # the installed copy ran, not the checkout
    assert Path(share) == prefix / 'share' / 'mesc3d_ros'
    assert Path(model) == prefix / 'share' / 'mesc3d_ros' / 'models' / f'{DEFAULT_MODEL}.json'
    assert Path(profile) == prefix / 'share' / 'mesc3d_ros' / 'config' / 'fastdds_loopback.xml'
    assert backend.startswith('onnxruntime')
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'mesc3d_ros').is_file()


def test_editable_registration_links_the_checkout_into_the_ament_index(tmp_path: Path):
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    for name in ('reconstruct_node', 'box_cloud_node', 'reconstruct_image'):  # what `pip install -e .` makes
        (venv / 'bin' / name).write_text(f'#!/bin/sh\nexec {sys.executable} -m mesc3d_ros.{name} "$@"\n')
        (venv / 'bin' / name).chmod(0o755)
    result = subprocess.run(['bash', str(REPO / 'scripts' / 'register_editable.sh'), str(venv)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    share = venv / 'share' / 'mesc3d_ros'
    assert (venv / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'mesc3d_ros').resolve() == \
        (REPO / 'resource' / 'mesc3d_ros').resolve()
    assert (share / 'launch' / 'reconstruct.launch.py').resolve() == (REPO / 'launch' / 'reconstruct.launch.py')
    assert (share / 'models' / f'{DEFAULT_MODEL}.json').is_file()
    assert (venv / 'lib' / 'mesc3d_ros' / 'reconstruct_node').resolve() == venv / 'bin' / 'reconstruct_node'
    if not (VENV_BIN / 'ros2').is_file():
        return  # without the upstream ros2 CLI the links are all there is to check
    env = clean_environment(AMENT_PREFIX_PATH=f'{venv}{os.pathsep}{VENV_BIN.parent}', PYTHONPATH=str(REPO))
    result = subprocess.run([str(VENV_BIN / 'ros2'), 'pkg', 'prefix', 'mesc3d_ros'], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0 and Path(result.stdout.strip()) == venv, result
    # ros2 launch through the registration runs the checkout's node on the checkout's shipped model.
    log = tmp_path / 'launch.log'
    with open(log, 'wb') as out:
        launch = subprocess.Popen([str(VENV_BIN / 'ros2'), 'launch', 'mesc3d_ros', 'reconstruct.launch.py'],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for(lambda: 'active: ' in log.read_text() or launch.poll() is not None, 90, 'the node to activate')
        assert f'from {REPO / "models" / DEFAULT_MODEL}.json' in log.read_text(), log.read_text()
    finally:  # the whole process group: launch and the node it started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launch.pid, signal.SIGINT)
        try:
            launch.wait(timeout=20)
            wait_for(lambda: not group_alive(launch.pid), 20, 'the node to exit after launch')
        except (subprocess.TimeoutExpired, TimeoutError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
            raise
