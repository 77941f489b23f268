"""
The runtime package never imports torch: each module of mesc3d_ros, imported alone in a fresh interpreter.

So do the tools that run beside the node: the demo publisher (a camera driver), the demo command until its scoring,
the node benchmark, the reliability runs, the doc blocks, and the torch-free data helpers they share with the data
generator (``data.scene``, ``data.sources``). A fresh interpreter per module, because within one process an earlier
import (a test, another module) could have loaded torch already and hide the culprit. New runtime modules are picked
up automatically through pkgutil. What a module's source imports, lazily too, is test_import_graph.py's part.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import mesc3d_ros

MODULES = ['mesc3d_ros'] + [f'mesc3d_ros.{info.name}' for info in pkgutil.iter_modules(mesc3d_ros.__path__)]
TORCH_FREE_TOOLS = ['mesc3d_training.cli', 'mesc3d_training.data.scene', 'mesc3d_training.data.sources',
                    'mesc3d_training.demo.publisher', 'mesc3d_training.demo.scenes', 'mesc3d_training.demo.run',
                    'mesc3d_training.bench.node', 'mesc3d_training.reliability.__main__',
                    'mesc3d_training.reliability.attack', 'mesc3d_training.reports.markdown_blocks']

# Prints every loaded top-level module whose name starts with "torch" (torch, torchvision, ...).
PROBE = ('import importlib, sys; importlib.import_module(sys.argv[1]); '
         'print(sorted({name.split(".")[0] for name in sys.modules if name.startswith("torch")}))')


@pytest.mark.parametrize('module', MODULES + TORCH_FREE_TOOLS)
def test_module_imports_without_torch(module):
    result = subprocess.run([sys.executable, '-c', PROBE, module], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f'import {module} failed:\n{result.stderr}'
    assert result.stdout.strip() == '[]', f'import {module} loaded {result.stdout.strip()}'


def test_the_module_list_is_not_empty():
    # Guards the parametrisation: an empty pkgutil walk would make the test above vanish, not fail.
    assert {'mesc3d_ros.conversions', 'mesc3d_ros.config', 'mesc3d_ros.contract'} <= set(MODULES)
