"""ament_pep257 (pydocstyle with ament's ignore list and conventions) over the project's Python."""
from pathlib import Path

import pytest
from ament_pep257.main import main

ROOT = Path(__file__).resolve().parents[1]
# Everything the project writes in Python; data/, runs/, build/, demo_out/ and .venv are outputs, not source.
LINTED = ('mesc3d_ros', 'training', 'test', 'launch', 'scripts', 'setup.py')


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257(capsys: pytest.CaptureFixture) -> None:
    rc = main(argv=[str(ROOT / p) for p in LINTED])
    # ament_pep257 prints one line per error, FILE:LINE in DEFINITION: CODE: MESSAGE, on stderr.
    found = [line.replace(f'{ROOT}/', '', 1) for line in capsys.readouterr().err.splitlines()
             if line.startswith(f'{ROOT}/')]
    assert rc == 0, f'{len(found)} pep257 errors (file:line):\n' + '\n'.join(found)
