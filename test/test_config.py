"""
Test mesc3d_ros.config.

The strict YAML loader names the offending key, values that cannot work together fail at load, save/load
round-trips, the hash is stable.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import yaml

from mesc3d_ros.config import (Config, ConfigError, ModelConfig, config_from_dict, config_hash, config_to_dict,
                               load_config, save_config)


def test_a_minimal_mapping_fills_in_the_defaults():
    cfg = config_from_dict({'model': {'name': 'tiny', 'num_points': 256}})
    assert cfg.model == ModelConfig(name='tiny', num_points=256)
    assert cfg == Config(model=ModelConfig(name='tiny', num_points=256))


@pytest.mark.parametrize('data, key', [
    ({'model': {'name': 'x'}, 'modle': {}}, 'modle'),
    ({'model': {'name': 'x', 'num_pionts': 256}}, 'num_pionts'),
    ({'model': {'name': 'x'}, 'train': {'epochs': 1, 'learning_rate': 0.1}}, 'learning_rate'),
])
def test_unknown_keys_are_rejected_by_name(data, key):
    with pytest.raises(ConfigError, match=f'unknown key.*{key}'):
        config_from_dict(data)


def test_missing_required_keys_are_rejected_by_name():
    with pytest.raises(ConfigError, match=r"config: missing required key\(s\) \['model'\]"):
        config_from_dict({})
    with pytest.raises(ConfigError, match=r"config.model: missing required key\(s\) \['name'\]"):
        config_from_dict({'model': {'num_points': 256}})


@pytest.mark.parametrize('section, key, value', [
    ('model', 'num_points', '2048'),  # a quoted number in YAML
    ('model', 'num_points', 2048.0),
    ('model', 'num_points', True),  # bool is an int subclass in Python; not in a config
    ('model', 'image_tokens', 'global'),  # not one of the Literal choices
    ('model', 'decoder_widths', 512),  # a tuple field needs a list
    ('train', 'lr', 'fast'),
    ('data', 'categories', ['mug', 3]),
])
def test_wrong_types_are_rejected_with_the_dotted_key(section, key, value):
    data = {'model': {'name': 'x'}}
    data.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=rf'config\.{section}\.{key}'):
        config_from_dict(data)


def test_an_int_is_accepted_where_a_float_is_declared():
    assert config_from_dict({'model': {'name': 'x'}, 'train': {'lr': 1}}).train.lr == 1.0


def test_yaml_round_trip_keeps_values_and_hash(tmp_path):
    cfg = config_from_dict({'model': {'name': 'rt', 'decoder_widths': [64, 32], 'dropout': 0.1},
                            'data': {'categories': ['mug', 'bowl']}, 'train': {'epochs': 3, 'seed': 7}})
    path = save_config(cfg, tmp_path / 'sub' / 'config.yaml')
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.model.decoder_widths == (64, 32)  # tuples come back as tuples, not lists
    assert config_hash(loaded) == config_hash(cfg)
    assert config_to_dict(loaded) == config_to_dict(cfg)


def test_hash_is_stable_across_processes_and_sensitive_to_values(tmp_path):
    cfg = config_from_dict({'model': {'name': 'h', 'num_points': 512}})
    path = save_config(cfg, tmp_path / 'config.yaml')
    # Another interpreter (other hash seed, other dict history) must compute the same digest from the file.
    other = subprocess.run(
        [sys.executable, '-c', 'import sys; from mesc3d_ros.config import load_config, config_hash; '
                               'print(config_hash(load_config(sys.argv[1])))', str(path)],
        capture_output=True, text=True, check=True, timeout=60, env={**os.environ, 'PYTHONHASHSEED': '123'})
    assert other.stdout.strip() == config_hash(cfg)
    assert len(config_hash(cfg)) == 64
    assert config_hash(config_from_dict({'model': {'name': 'h', 'num_points': 1024}})) != config_hash(cfg)


def test_unreadable_yaml_names_the_file(tmp_path):
    path = tmp_path / 'broken.yaml'
    path.write_text('model: {name: x\n')
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)
    with pytest.raises(ConfigError, match='missing.yaml'):
        load_config(tmp_path / 'missing.yaml')
    list_file = tmp_path / 'list.yaml'
    list_file.write_text('- model\n')
    with pytest.raises(ConfigError, match=f'{list_file}: expected a mapping at the top level'):
        load_config(list_file)


@pytest.mark.parametrize('section, values, message', [
    ('model', {'token_dim': 30, 'mit_heads': 8}, 'token_dim=30 is not divisible by mit_heads=8'),
    ('model', {'mit_depth': 3}, 'mit_depth=3: must be even'),
    ('model', {'image_backbone': 'mobilenet_v2'}, 'image_tokens=fc is the ResNet logits path'),
    ('model', {'image_weights': 'imagenet'}, 'imagenet ships for mobilenet_v2 only'),
    ('model', {'dropout': 1.0}, r'dropout=1.0, drop_path=0.2 must be in \[0, 1\)'),
    ('train', {'batch_size': 0}, 'batch_size=0'),
    ('train', {'lr': 0.0}, 'learning rates must be positive'),
    ('train', {'feature_cache': 'cache', 'pack': 'pack.npz'}, 'feature_cache and pack'),
    ('data', {'num_gt_points': 0}, 'num_gt_points=0'),
])
def test_values_that_cannot_work_fail_when_the_file_is_loaded(tmp_path, section, values, message):
    data = {'model': {'name': 'bad'}}
    data.setdefault(section, {}).update(values)
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf'{path}\.{section}: .*{message}'):
        load_config(path)


def test_a_feature_cache_without_pretrained_weights_fails_at_load_and_on_replace():
    data = {'model': {'name': 'x', 'image_backbone': 'mobilenet_v2', 'image_tokens': 'pooled'},
            'train': {'feature_cache': 'cache'}}
    with pytest.raises(ConfigError, match='feature_cache freezes the image trunk'):
        config_from_dict(data)
    data['model']['image_weights'] = 'imagenet'
    cfg = config_from_dict(data)
    with pytest.raises(ConfigError, match='model config .x.: token_dim=32 is not divisible by mit_heads=3'):
        dataclasses.replace(cfg.model, mit_heads=3)
    with pytest.raises(ConfigError, match="data.layout: generated, not 'shapenet'"):
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, layout='shapenet'))
