"""
Every shipped model's deployable form (models/<name>.json + .onnx, what the node loads) matches its checkpoint.

``mesc3d ship models/<name>.safetensors`` writes the deployable form beside the training checkpoint; these tests
fail when one is missing or when the checkpoint changed after it was shipped (rerun ``mesc3d ship``). The fast tests
compare recorded hashes and the contract with the checkpoint's YAML without torch; the slow one runs both through
their own runtimes (torch eager vs ONNX Runtime) on the export's parity inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from mesc3d_ros.config import config_from_dict, config_hash
from mesc3d_ros.contract import ContractError, file_sha256, load_contract, verify_model_file
from mesc3d_ros.inference import create_backend
from mesc3d_ros.package_share import DEFAULT_MODEL, resolve_model, shipped_models

MODELS = Path(__file__).resolve().parent.parent / 'models'
CHECKPOINTS = sorted(path.with_suffix('') for path in MODELS.glob('*.safetensors'))


def test_the_default_model_is_shipped_and_every_checkpoint_has_a_deployable_form():
    assert CHECKPOINTS, f'no shipped checkpoint in {MODELS}'
    shipped = shipped_models()
    assert DEFAULT_MODEL in shipped
    assert sorted(shipped) == sorted(stem.name for stem in CHECKPOINTS), \
        'run `mesc3d ship models/<name>.safetensors` for every shipped checkpoint'


@pytest.mark.parametrize('stem', CHECKPOINTS, ids=lambda stem: stem.name)
def test_deployable_form_was_made_from_these_checkpoint_bytes(stem: Path):
    contract_path = stem.with_suffix('.json')
    contract = load_contract(contract_path)
    verify_model_file(contract, contract_path)  # the ONNX is the one the contract was written for
    source = json.loads(stem.with_name(f'{stem.name}.source.json').read_text())
    stale = f'{stem} changed after it was shipped: rerun `mesc3d ship {stem}.safetensors`'
    assert source['weights_sha256'] == file_sha256(stem.with_suffix('.safetensors')), stale
    assert source['meta_sha256'] == file_sha256(stem.with_suffix('.yaml')), stale
    meta = yaml.safe_load(stem.with_suffix('.yaml').read_text())
    assert contract.config_hash == config_hash(config_from_dict(meta['config'])), stale
    assert [entry.name for entry in contract.classes] == [entry['name'] for entry in meta['classes']]
    assert np.allclose(contract.embedding_table(), [entry['embedding'] for entry in meta['classes']])
    assert contract.generic_class.name == meta['generic_class']['name']
    # One copy of the weights: the graph reads them from the checkpoint file (ONNX external data).
    assert contract_path.with_suffix('.onnx').stat().st_size < 0.1 * stem.with_suffix('.safetensors').stat().st_size
    graph = onnx.load(contract_path.with_suffix('.onnx'), load_external_data=False)
    external = {entry.value for init in graph.graph.initializer for entry in init.external_data
                if entry.key == 'location'}
    assert external == {stem.with_suffix('.safetensors').name}


@pytest.mark.slow
@pytest.mark.parametrize('stem', CHECKPOINTS, ids=lambda stem: stem.name)
def test_deployable_form_computes_what_the_checkpoint_computes(stem: Path):
    torch = pytest.importorskip('torch')
    from mesc3d_training.checkpoint import load_model
    from mesc3d_training.export import PARITY_BATCH, parity_inputs
    from mesc3d_training.export import FP32_TOLERANCE

    contract_path = stem.with_suffix('.json')
    contract = load_contract(contract_path)
    image, embedding = parity_inputs(contract, PARITY_BATCH, seed=3)
    with torch.inference_mode():
        reference = load_model(stem).model(torch.from_numpy(image), torch.from_numpy(embedding)).numpy()
    backend = create_backend(contract_path, 'onnxruntime')
    try:
        points = backend.run(image, embedding)  # (B, N, 3) unit ball
    finally:
        backend.close()
    assert np.abs(points - reference).max() <= FP32_TOLERANCE


def test_model_path_names_a_shipped_model_or_a_file():
    assert resolve_model('') == resolve_model(DEFAULT_MODEL) == MODELS / f'{DEFAULT_MODEL}.json'
    assert resolve_model(str(MODELS / f'{DEFAULT_MODEL}.json')) == MODELS / f'{DEFAULT_MODEL}.json'
    with pytest.raises(FileNotFoundError, match=f'shipped: .*{DEFAULT_MODEL}'):
        resolve_model('no_such_model')


@pytest.mark.parametrize('suffix', ['.safetensors', '.yaml'])
def test_a_training_checkpoint_as_model_says_how_to_export_it(suffix: str):
    with pytest.raises(ValueError, match=r'training checkpoint.*mesc3d export .*--out-dir'):
        resolve_model(str(MODELS / f'{DEFAULT_MODEL}{suffix}'))


def test_a_renamed_safetensors_file_is_recognised(tmp_path: Path):
    renamed = tmp_path / 'model.json'
    renamed.write_bytes((MODELS / f'{DEFAULT_MODEL}.safetensors').read_bytes()[:4096])
    with pytest.raises(ValueError, match='training checkpoint'):
        resolve_model(str(renamed))


def test_a_changed_checkpoint_under_a_shipped_graph_is_refused(tmp_path: Path):
    for path in MODELS.glob(f'{DEFAULT_MODEL}.*'):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    weights = tmp_path / f'{DEFAULT_MODEL}.safetensors'
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one weight byte: the offsets would now read a different model
    weights.write_bytes(bytes(data))
    with pytest.raises(ContractError, match='mesc3d ship'):
        resolve_model(str(tmp_path / f'{DEFAULT_MODEL}.json'))
