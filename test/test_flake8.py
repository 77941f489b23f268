"""
ament_flake8 over the project's Python, as ``colcon test`` runs it in a ROS package.

The configuration is ament_flake8's own with the project's line length (``setup.cfg`` [flake8] says what differs).
"""
from pathlib import Path

import pytest
from ament_flake8.main import main_with_errors

ROOT = Path(__file__).resolve().parents[1]
# Everything the project writes in Python; data/, runs/, build/, demo_out/ and .venv are outputs, not source.
LINTED = ('mesc3d_ros', 'training', 'test', 'launch', 'scripts', 'setup.py')


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ament_flake8 walks the working directory for AMENT_IGNORE markers: an empty one keeps that walk out of data/.
    monkeypatch.chdir(tmp_path)
    rc, errors = main_with_errors(argv=['--config', str(ROOT / 'setup.cfg'), *(str(ROOT / p) for p in LINTED)])
    found = [e.replace(f'{ROOT}/', '', 1) for e in errors]
    assert rc == 0, f'{len(found)} flake8 errors (file:line:column):\n' + '\n'.join(found)
