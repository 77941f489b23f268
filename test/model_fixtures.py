"""
A real, tiny MESC-3D with random weights, saved and exported exactly as a trained one would be.

For proof-of-life tests (Isaac ROS style): the ONNX and contract have the real model's bindings, class table and
checks, but the weights are random, so the shapes it predicts mean nothing. Use :func:`make_random_model` (or the
``random_model_contract`` fixture, imported into a test module) and create backends from the returned contract.

Exporting takes a few CPU seconds, so results are cached for the whole test session by parameters: a second call
with the same parameters returns the first call's contract path, whatever ``out_dir`` it passes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mesc3d_ros.config import Config, DataConfig, ModelConfig
from mesc3d_ros.contract import ClassEntry

_EXPORTED: dict[tuple, Path] = {}


def tiny_config(image_size: int = 64, num_points: int = 64, text_dim: int = 16,
                frame: str = 'viewer', name: str = 'tiny') -> Config:
    """Return the smallest config that exercises every part of the network (ResNet, MIT, ESM stages, tail, head)."""
    return Config(
        model=ModelConfig(name=name, image_size=image_size, num_points=num_points, resnet_layers=(1, 1, 1, 1),
                          num_tokens=4, token_dim=8, mit_depth=2, mit_heads=2, text_dim=text_dim, class_dim=16,
                          decoder_widths=(32, 16), tail_widths=(8,), dropout=0.0, drop_path=0.0),
        data=DataConfig(frame=frame))


def random_class_table(names: tuple[str, ...], dim: int, seed: int) -> tuple[ClassEntry, ...]:
    """Unit-norm random embeddings (like normalised text embeddings) and a 0.1 m … size prior per class."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(names), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return tuple(ClassEntry(name=name, embedding=tuple(float(v) for v in vector), size_m=0.1 + 0.05 * i)
                 for i, (name, vector) in enumerate(zip(names, vectors)))


def make_random_model(out_dir: Path, image_size: int = 64, num_points: int = 64, text_dim: int = 16,
                      classes: tuple[str, ...] = ('mug', 'bottle', 'bowl'), frame: str = 'viewer',
                      seed: int = 0) -> Path:
    """
    Build a tiny-config MESC-3D with seeded random weights, save it (``save_model``).

    Export it (``export_model``: ONNX + float16 ONNX + contract) into ``out_dir``; return the contract JSON path.
    """
    from mesc3d_training.checkpoint import load_model, save_model
    from mesc3d_training.export import export_model
    from mesc3d_training.model import build_model

    key = (image_size, num_points, text_dim, classes, frame, seed)
    if key in _EXPORTED and _EXPORTED[key].is_file():
        return _EXPORTED[key]
    cfg = tiny_config(image_size=image_size, num_points=num_points, text_dim=text_dim, frame=frame)
    torch.manual_seed(seed)
    model = build_model(cfg.model).eval()
    table = random_class_table(classes + ('object',), text_dim, seed)
    saved = save_model(Path(out_dir) / 'checkpoint' / cfg.model.name, model, cfg, classes=table[:-1],
                       generic_class=table[-1], data_manifest_hash='random-weights', metrics={})
    _EXPORTED[key] = export_model(load_model(saved), Path(out_dir) / 'engines')
    return _EXPORTED[key]


def checkpoint_of(contract_path: Path) -> Path:
    """Return the checkpoint (``save_model`` YAML) a :func:`make_random_model` contract was exported from."""
    return contract_path.parent.parent / 'checkpoint' / f'{contract_path.stem}.yaml'


@pytest.fixture(scope='session')
def random_model_contract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Contract JSON of the default tiny random model (64 px crops, 64 points, 16-d embeddings, 3 classes)."""
    return make_random_model(tmp_path_factory.mktemp('random_model'))
