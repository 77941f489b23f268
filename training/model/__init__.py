"""The MESC-3D network (``mesc3d.py``) and its parts; ``build_model`` is the one way to make it from a config."""

from __future__ import annotations

from mesc3d_ros.config import ModelConfig
from mesc3d_training.model.mesc3d import MESC3D


def build_model(cfg: ModelConfig) -> MESC3D:
    """Return a freshly initialised MESC-3D for ``cfg`` (train mode, CPU, float32)."""
    return MESC3D(cfg)


__all__ = ['MESC3D', 'build_model']
