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
    # One copy of the weights: the graph reads them from the checkpoint file (ONNX external data); what it stores
    # itself are tensors the checkpoint lacks (normalisation constants, sphere grids), not a second copy.
    graph = onnx.load(contract_path.with_suffix('.onnx'), load_external_data=False)
    external = {entry.value for init in graph.graph.initializer for entry in init.external_data
                if entry.key == 'location'}
    assert external == {stem.with_suffix('.safetensors').name}
    inline_bytes = sum(init.ByteSize() for init in graph.graph.initializer if not init.external_data)
    assert inline_bytes < 0.1 * stem.with_suffix('.safetensors').stat().st_size


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
    backend = create_backend(contract_path, 'onnxruntime', precision='fp32')
    try:
        points = backend.run(image, embedding)  # (B, N, 3) unit ball
    finally:
        backend.close()
    assert np.abs(points - reference).max() <= FP32_TOLERANCE


def photo_inputs(contract) -> tuple[np.ndarray, np.ndarray]:
    """
    Return real photographs as the node feeds them: (B, 3, S, S) crops in [0, 1] and their class embeddings.

    scikit-image's bundled coffee cup (CC0), astronaut and cat, each resized whole to the model's input; INT8 ranges
    come from real crops, so uniform noise would test the calibration's clipping instead of the model.
    """
    from PIL import Image
    from skimage import data

    photos = {'mug': data.coffee(), 'toy': data.astronaut(), 'other': data.chelsea()}
    size = contract.image_size
    image = np.stack([np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR), np.float32) / 255.0
                      for pixels in photos.values()]).transpose(0, 3, 1, 2)   # (B, 3, S, S)
    rows = {entry.name: entry.embedding for entry in contract.classes}
    embedding = np.array([rows.get(name, contract.generic_class.embedding) for name in photos], np.float32)
    return np.ascontiguousarray(image), embedding


def test_the_default_model_ships_an_int8_model_calibrated_on_validation_crops():
    contract_path = MODELS / f'{DEFAULT_MODEL}.json'
    contract = load_contract(contract_path)
    assert 'int8' in contract.precisions, 'ship the default model with its dataset present (mesc3d ship)'
    verify_model_file(contract, contract_path, 'int8')  # the file the contract names, byte for byte
    record = contract.quantization
    assert record['calibration']['split'] == 'val' and len(record['calibration']['items']) >= 100
    assert abs(record['calibration_cd_l1_change_pct']) <= 3.0  # the INT8 budget (issue 16), on validation


@pytest.mark.parametrize('stem', CHECKPOINTS, ids=lambda stem: stem.name)
def test_int8_model_computes_what_the_float_model_computes(stem: Path):
    contract_path = stem.with_suffix('.json')
    contract = load_contract(contract_path)
    if 'int8' not in contract.precisions:
        pytest.skip(f'{stem.name} ships no INT8 model')
    image, embedding = photo_inputs(contract)
    points = {}
    for precision in ('fp32', 'int8'):
        backend = create_backend(contract_path, 'onnxruntime', precision=precision)
        try:
            points[precision] = backend.run(image, embedding)  # (B, N, 3) unit ball
        finally:
            backend.close()
    # Point order is the decoder's, so points compare one to one. INT8 moves them by ~5 % of the unit radius on these
    # photos (0.054 measured for mesc3d_mobile); a broken scale or zero point moves them by tens of %.
    rms = float(np.sqrt(np.mean(np.sum((points['int8'] - points['fp32']) ** 2, axis=-1))))
    assert rms < 0.1, rms


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
