"""
The runtime package never imports torch: each module of mesc3d_ros, imported alone in a fresh interpreter.

A fresh interpreter per module, because within one process an earlier import (a test, another module) could have
loaded torch already and hide the culprit. New modules are picked up automatically through pkgutil.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import mesc3d_ros

MODULES = ['mesc3d_ros'] + [f'mesc3d_ros.{info.name}' for info in pkgutil.iter_modules(mesc3d_ros.__path__)]

# Prints every loaded top-level module whose name starts with "torch" (torch, torchvision, ...).
PROBE = ('import importlib, sys; importlib.import_module(sys.argv[1]); '
         'print(sorted({name.split(".")[0] for name in sys.modules if name.startswith("torch")}))')


@pytest.mark.parametrize('module', MODULES)
def test_module_imports_without_torch(module):
    result = subprocess.run([sys.executable, '-c', PROBE, module], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f'import {module} failed:\n{result.stderr}'
    assert result.stdout.strip() == '[]', f'import {module} loaded {result.stdout.strip()}'


def test_the_module_list_is_not_empty():
    # Guards the parametrisation: an empty pkgutil walk would make the test above vanish, not fail.
    assert {'mesc3d_ros.conversions', 'mesc3d_ros.config', 'mesc3d_ros.contract'} <= set(MODULES)
