"""The deployable checkpoint: round trips (float32 and float16 storage) and clear errors for every kind of damage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from mesc3d_ros.config import config_to_dict
from mesc3d_training.checkpoint import CheckpointError, load_model, save_model
from mesc3d_training.model import build_model
from model_fixtures import random_class_table, tiny_config

CLASSES = ('mug', 'bottle')


def _save(tmp_path: Path, fp16: bool = False) -> tuple[Path, torch.nn.Module]:
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    table = random_class_table(CLASSES + ('object',), cfg.model.text_dim, seed=0)
    meta = save_model(tmp_path / 'tiny', model, cfg, classes=table[:-1], generic_class=table[-1],
                      data_manifest_hash='abc123', metrics={'cd_l1': 0.05, 'f_score@0.01': [0.4, 0.5]}, fp16=fp16)
    return meta, model


@pytest.fixture(scope='module')
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    return _save(tmp_path_factory.mktemp('checkpoint'))


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, 64, 64, generator=generator), torch.randn(batch, 16, generator=generator)


def test_round_trip_restores_weights_outputs_and_metadata(saved):
    meta_path, model = saved
    loaded = load_model(meta_path)
    assert not loaded.model.training
    reference = model.state_dict()
    restored = loaded.model.state_dict()
    assert reference.keys() == restored.keys()
    assert all(torch.equal(reference[key], restored[key]) for key in reference)
    with torch.inference_mode():
        assert torch.equal(model(*_inputs()), loaded.model(*_inputs()))
    assert loaded.cfg == tiny_config()
    assert [entry.name for entry in loaded.classes] == list(CLASSES)
    assert loaded.generic_class.name == 'object'
    assert loaded.classes == random_class_table(CLASSES + ('object',), 16, seed=0)[:-1]
    assert loaded.data_manifest_hash == 'abc123'
    assert loaded.metrics == {'cd_l1': 0.05, 'f_score@0.01': [0.4, 0.5]}


def test_stem_yaml_and_safetensors_paths_name_the_same_checkpoint(saved):
    meta_path, _ = saved
    for path in (meta_path.with_suffix(''), meta_path, meta_path.with_suffix('.safetensors')):
        assert load_model(path).data_manifest_hash == 'abc123'


def test_fp16_storage_halves_the_file_and_loads_as_float32(saved, tmp_path):
    fp32_meta, model = saved
    fp16_meta, _ = _save(tmp_path, fp16=True)
    fp32_size = fp32_meta.with_suffix('.safetensors').stat().st_size
    fp16_size = fp16_meta.with_suffix('.safetensors').stat().st_size
    assert 0.45 < fp16_size / fp32_size < 0.55
    loaded = load_model(fp16_meta)
    assert all(t.dtype == torch.float32 for t in loaded.model.state_dict().values() if t.is_floating_point())
    with torch.inference_mode():
        error = (model(*_inputs()) - loaded.model(*_inputs())).abs().max().item()
    assert 0 < error < 1e-2


def test_truncated_weights_fail_the_hash_check(saved, tmp_path):
    meta_path, _ = saved
    copy = _copy(meta_path, tmp_path)
    weights = copy.with_suffix('.safetensors')
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r'tiny\.safetensors: sha256 .* "weights_sha256"'):
        load_model(copy)


def test_corrupt_weights_with_a_matching_hash_are_not_safetensors(saved, tmp_path):
    import hashlib

    meta_path, _ = saved
    copy = _copy(meta_path, tmp_path)
    weights = copy.with_suffix('.safetensors')
    weights.write_bytes(b'\xff' * 64)
    _edit_meta(copy, {'weights_sha256': hashlib.sha256(b'\xff' * 64).hexdigest()})
    with pytest.raises(CheckpointError, match=r'tiny\.safetensors: not a readable safetensors file'):
        load_model(copy)


def test_weights_that_do_not_fit_the_config_name_the_key(saved, tmp_path):
    meta_path, _ = saved
    copy = _copy(meta_path, tmp_path)
    cfg = tiny_config()
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, class_dim=24))
    _edit_meta(copy, {'config': config_to_dict(wider)})
    with pytest.raises(CheckpointError, match=r'key "class_proj.weight" has shape \(16, 16\), the config builds '
                                              r'\(24, 16\)'):
        load_model(copy)

    deeper = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, decoder_widths=(32, 16, 16)))
    _edit_meta(copy, {'config': config_to_dict(deeper)})
    with pytest.raises(CheckpointError, match=r'missing key\(s\) \[.*decoder\.'):
        load_model(copy)


def test_metadata_problems_name_the_key(saved, tmp_path):
    meta_path, _ = saved
    copy = _copy(meta_path, tmp_path)
    meta = yaml.safe_load(copy.read_text())
    del meta['generic_class']
    copy.write_text(yaml.safe_dump(meta))
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['generic_class'\]"):
        load_model(copy)

    copy = _copy(meta_path, tmp_path)
    _edit_meta(copy, {'classes': []})
    with pytest.raises(CheckpointError, match='"classes" is empty'):
        load_model(copy)

    copy = _copy(meta_path, tmp_path)
    meta = yaml.safe_load(copy.read_text())
    meta['classes'][1]['embedding'] = meta['classes'][1]['embedding'][:3]
    copy.write_text(yaml.safe_dump(meta))
    with pytest.raises(CheckpointError, match=r'classes\[1\]: field "embedding" has 3 values'):
        load_model(copy)

    with pytest.raises(CheckpointError, match='cannot read checkpoint metadata'):
        load_model(tmp_path / 'absent')


def test_save_refuses_values_it_could_not_load_back(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg.model)
    table = random_class_table(('mug', 'object'), cfg.model.text_dim, seed=0)
    with pytest.raises(ValueError, match='metrics'):
        save_model(tmp_path / 'x', model, cfg, table[:1], table[1], 'h', metrics={'cd': torch.tensor(1.0)})
    short = dataclasses.replace(table[0], embedding=(0.0,) * 3)
    with pytest.raises(ValueError, match='"mug" has a 3-d embedding'):
        save_model(tmp_path / 'x', model, cfg, (short,), table[1], 'h', metrics={})
    assert not list(tmp_path.iterdir()), 'a refused save must not leave files behind'


def _copy(meta_path: Path, folder: Path) -> Path:
    target = folder / f'copy{len(list(folder.iterdir()))}'
    target.mkdir()
    for suffix in ('.yaml', '.safetensors'):
        (target / f'tiny{suffix}').write_bytes(meta_path.with_suffix(suffix).read_bytes())
    return target / 'tiny.yaml'


def _edit_meta(meta_path: Path, values: dict) -> None:
    meta = yaml.safe_load(meta_path.read_text())
    meta.update(values)
    meta_path.write_text(yaml.safe_dump(meta))


def test_prompts_round_trip_beside_the_model_weights(tmp_path):
    from mesc3d_training.model.text_prior import PromptParameters

    cfg = tiny_config()
    model = build_model(cfg.model)
    prompts = PromptParameters(context=2, deep_prompts=3, layers=6, width=16)
    table = random_class_table(('mug', 'object'), cfg.model.text_dim, seed=0)
    meta = save_model(tmp_path / 'p', model, cfg, table[:1], table[1], 'h', metrics={}, prompts=prompts.state_dict())
    loaded = load_model(meta)
    assert loaded.prompts.keys() == prompts.state_dict().keys() == {'before', 'after', 'deep'}
    assert all(torch.equal(loaded.prompts[key], value) for key, value in prompts.state_dict().items())
    assert loaded.model.state_dict().keys() == model.state_dict().keys()
    (tmp_path / 'none').mkdir()
    assert load_model(_save(tmp_path / 'none')[0]).prompts == {}
