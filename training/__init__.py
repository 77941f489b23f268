"""
mesc3d_training: the PyTorch side (model, data, losses/metrics, train, eval, export).

Installed from the repository's ``training/`` folder under this name. May import ``mesc3d_ros``; the reverse never
happens.
"""

from pathlib import Path

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / 'models' / 'mesc3d_mobile.yaml'
"""The model the package ships with (``mesc3d demo`` and ``mesc3d bench`` use it by default)."""
