"""
A tiny real dataset and a tiny config for the training, evaluation and baseline tests.

The dataset is rendered by the real generator (``make_dataset``, 9 objects × 2 views, ~2 s). Its hash-based 70/10/20
split leaves val or test empty at this size, so the manifest's splits are reassigned by hand (and its hash
recomputed): every split then has objects, and ``toy`` is held out for the zero-shot split. With the myosuite wheel
installed, one myosuite object forms the ``unseen`` split (the generator puts that whole collection there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mesc3d_ros.config import Config, config_from_dict
from mesc3d_training.data import layout
from mesc3d_training.data.asset_collections import myosuite_objects
from mesc3d_training.data.generate import make_dataset

SPLITS = {
    'train': ['pybullet_mug', 'random_007', 'random_100', 'random_300', 'pybullet_jenga'],
    'val': ['random_200', 'pybullet_lego'],
    'test': ['sh3d_katorlegaz_coffee_mug', 'random_400', 'pybullet_domino'],
}
ZERO_SHOT = ['pybullet_duck', 'pybullet_teddy']
HELD_OUT = 'toy'
UNSEEN = ['myo_cup'] if any(o.object_id == 'myo_cup' for o in myosuite_objects()) else []


def make_tiny_dataset(root: Path) -> Path:
    ids = [i for ids in SPLITS.values() for i in ids] + ZERO_SHOT + UNSEEN
    manifest_path = make_dataset(root, seed=0, views=2, object_ids=tuple(ids), workers=1, progress=False)
    manifest = json.loads(manifest_path.read_text())
    for name, members in SPLITS.items():
        manifest['splits'][name] = sorted(members)
        for object_id in members:
            manifest['objects'][object_id]['split'] = name
    manifest['manifest_hash'] = layout.manifest_hash(manifest)
    manifest_path.write_text(json.dumps(manifest))
    categories = {manifest['objects'][i]['category'] for i in ZERO_SHOT}
    if categories != {HELD_OUT}:
        raise RuntimeError(f'the zero-shot objects are {categories}, the tests expect {HELD_OUT!r}')
    return root


def tiny_config(data_root: Path, **train: object) -> Config:
    """Return a few-thousand-parameter MESC-3D over the tiny dataset; ``train`` overrides TrainConfig fields."""
    return config_from_dict({
        'model': {'name': 'tiny', 'image_size': 64, 'num_points': 128, 'resnet_layers': [1, 1, 1, 1],
                  'num_tokens': 4, 'token_dim': 16, 'mit_depth': 2, 'mit_heads': 2, 'class_dim': 32,
                  'decoder_widths': [32, 32], 'tail_widths': [16], 'selection_rank': 4, 'prompt_context': 2,
                  'deep_prompts': 2, 'dropout': 0.1, 'drop_path': 0.1},
        'data': {'root': str(data_root), 'frame': 'viewer', 'num_gt_points': 256, 'held_out_categories': [HELD_OUT]},
        'train': {'epochs': 2, 'batch_size': 2, 'warmup_epochs': 1, 'prompt_epochs': 2, 'prompt_batch_size': 4,
                  'num_workers': 0, 'log_every_steps': 1, **train},
    })


def assert_sample(item: dict, size: int, num_points: int, categories: tuple[str, ...]) -> None:
    """Check a loader item as the training loop takes it: crop in [0, 1], unit-ball cloud, category, rotation."""
    assert item['image'].shape == (3, size, size) and item['image'].dtype == torch.float32
    assert 0.0 <= float(item['image'].min()) and float(item['image'].max()) <= 1.0
    assert float(item['image'].std()) > 0.01  # a real crop, not a blank
    assert item['points'].shape == (num_points, 3) and item['points'].dtype == torch.float32
    assert torch.isfinite(item['points']).all() and float(item['points'].norm(dim=1).max()) <= 1.0 + 1e-5
    assert item['category'] in categories
    assert categories[item['category_index']] == item['category']
    assert isinstance(item['object_id'], str) and isinstance(item['view'], int)
    rotation = item['rotation']
    assert rotation.shape == (3, 3) and abs(abs(np.linalg.det(rotation)) - 1) < 1e-5
