"""mesc3d_ros.contract: load/save round trip, and every broken contract is a ContractError naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesc3d_ros.config import Config, ModelConfig, config_hash, config_to_dict
from mesc3d_ros.contract import (ClassEntry, ContractError, ModelContract, file_sha256, load_contract,
                                 verify_model_file)

DIM = 4


@pytest.fixture
def contract_path(tmp_path: Path) -> Path:
    """Return a valid contract JSON next to a stand-in model file (its bytes only matter to the sha256 check)."""
    model = tmp_path / 'tiny.onnx'
    model.write_bytes(b'stand-in model bytes')
    cfg = Config(model=ModelConfig(name='tiny', image_size=32, num_points=64, text_dim=DIM))
    contract = ModelContract(
        name='tiny', model_file=model.name, model_sha256=file_sha256(model), image_size=32, embedding_dim=DIM,
        num_points=64, output_frame='viewer', crop_padding=0.1,
        classes=(ClassEntry(name='mug', embedding=(0.1, 0.2, 0.3, 0.4), size_m=0.12),
                 ClassEntry(name='chair', embedding=(1.0, 0.0, -1.0, 0.5), size_m=0.9)),
        generic_class=ClassEntry(name='object', embedding=(0.0,) * DIM, size_m=0.3),
        config=config_to_dict(cfg), config_hash=config_hash(cfg), opset=17, metrics={'cd_l1': 0.05})
    return contract.save(tmp_path / 'tiny.json')


def rewrite(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def test_round_trip_and_model_file_check(contract_path):
    contract = load_contract(contract_path)
    assert contract.class_names == ('mug', 'chair')
    assert contract.embedding_table().shape == (2, DIM)
    assert contract.save(contract_path.with_name('again.json')).read_text() == contract.to_json()
    assert load_contract(contract_path.with_name('again.json')) == contract
    assert verify_model_file(contract, contract_path) == contract_path.with_name('tiny.onnx').resolve()


@pytest.mark.parametrize('field', ['num_points', 'classes', 'generic_class', 'model_sha256', 'config_hash'])
def test_missing_field_is_named_with_the_file(contract_path, field):
    rewrite(contract_path, lambda data: data.pop(field))
    with pytest.raises(ContractError, match=rf'{contract_path}: missing field "{field}"'):
        load_contract(contract_path)


def test_wrong_embedding_length_is_named(contract_path):
    rewrite(contract_path, lambda data: data['classes'][1]['embedding'].pop())
    with pytest.raises(ContractError, match=rf'{contract_path}: classes\[1\]: field "embedding" has 3 values, '
                                            rf'embedding_dim is {DIM}'):
        load_contract(contract_path)


def test_wrong_field_type_is_named(contract_path):
    rewrite(contract_path, lambda data: data.update(image_size='32'))
    with pytest.raises(ContractError, match=rf'{contract_path}: field "image_size" has the wrong type \(str\)'):
        load_contract(contract_path)


def test_corrupt_json_is_named(contract_path):
    contract_path.write_bytes(contract_path.read_bytes()[:-40])  # truncated, as by an interrupted copy
    with pytest.raises(ContractError, match=rf'{contract_path}: not valid JSON'):
        load_contract(contract_path)


def test_missing_contract_file_is_named(tmp_path):
    with pytest.raises(ContractError, match='absent.json: cannot read model contract'):
        load_contract(tmp_path / 'absent.json')


def test_changed_or_missing_model_file_is_refused(contract_path):
    contract = load_contract(contract_path)
    model = contract_path.with_name('tiny.onnx')
    model.write_bytes(b're-exported model bytes')
    with pytest.raises(ContractError, match=r'does not match field "model_sha256"'):
        verify_model_file(contract, contract_path)
    model.unlink()
    with pytest.raises(ContractError, match=rf'{contract_path}: field "model_file" points at .*tiny.onnx'):
        verify_model_file(contract, contract_path)
