"""ONNX Runtime backend and the start-up contract check, on a real exported tiny MESC-3D (random weights)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from mesc3d_ros.contract import ContractError, check_signature, file_sha256, load_contract
from mesc3d_ros.inference import OnnxRuntimeBackend, create_backend
from mesc3d_training.checkpoint import load_model
import model_fixtures
from model_fixtures import checkpoint_of

# The session fixture shared with other test modules: pytest looks fixtures up by name in the module.
random_model_contract = model_fixtures.random_model_contract


def _inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((batch, 3, 64, 64), dtype=np.float32), rng.normal(size=(batch, 16)).astype(np.float32)


def _copy_model(contract_path: Path, folder: Path) -> Path:
    """Return a private copy of contract + ONNX files that a test may damage."""
    for path in contract_path.parent.glob(f'{contract_path.stem}.*'):
        shutil.copy(path, folder / path.name)
    return folder / contract_path.name


def _edit_contract(path: Path, values: dict) -> None:
    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data))


def test_onnxruntime_backend_equals_torch_and_splits_big_batches(random_model_contract):
    backend = create_backend(random_model_contract, 'onnxruntime', max_batch=2, threads=1)
    assert backend.name == 'onnxruntime[CPUExecutionProvider] fp32' and backend.max_batch == 2
    image, embedding = _inputs(batch=5)
    points = backend.run(image, embedding)          # 5 objects through a max-batch-2 session: 2 + 2 + 1
    model = load_model(checkpoint_of(random_model_contract)).model
    with torch.inference_mode():
        reference = model(torch.from_numpy(image), torch.from_numpy(embedding)).numpy()
    assert points.shape == (5, 64, 3) and points.dtype == np.float32
    assert np.abs(points - reference).max() <= 1e-4
    backend.close()


def test_run_checks_inputs_and_handles_an_empty_batch(random_model_contract):
    backend = create_backend(random_model_contract, 'onnxruntime', max_batch=4, threads=1)
    assert backend.run(*_inputs(batch=0)).shape == (0, 64, 3)
    image, embedding = _inputs(batch=2)
    with pytest.raises(ValueError, match=r'"image" must be \(B, 3, 64, 64\), got \(2, 3, 32, 32\)'):
        backend.run(image[:, :, :32, :32], embedding)
    with pytest.raises(ValueError, match=r'"class_embedding" must be \(B, 16\)'):
        backend.run(image, embedding[:, :8])
    with pytest.raises(ValueError, match='batch sizes differ'):
        backend.run(image, embedding[:1])
    # float64 and non-contiguous inputs are accepted and converted, not silently misread.
    np.testing.assert_allclose(backend.run(image.astype(np.float64), np.asfortranarray(embedding)),
                               backend.run(image, embedding), atol=1e-6)


def test_auto_falls_back_to_onnxruntime_and_says_why(random_model_contract, caplog):
    with caplog.at_level(logging.INFO, logger='mesc3d_ros.inference'):
        backend = create_backend(random_model_contract, 'auto', max_batch=1, threads=1)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert 'ONNX Runtime, because TensorRT is not usable here: the tensorrt Python module is not installed' \
        in caplog.text
    with pytest.raises(RuntimeError, match='TensorRT backend requested but not usable'):
        create_backend(random_model_contract, 'tensorrt')


@pytest.mark.parametrize('field, value, message', [
    ('image_size', 96, r'input "image" axis 2 is 64, but contract field "image_size" says 96'),
    ('embedding_dim', 8, r'input "class_embedding" axis 1 is 16, but contract field "embedding_dim" says 8'),
    ('num_points', 2048, r'output "points" axis 1 is 64, but contract field "num_points" says 2048'),
    ('classes', [], r'field "classes" is empty: the model needs a class table'),
    ('model_sha256', '0' * 64, r'tiny\.onnx: sha256 .* does not match field "model_sha256"'),
])
def test_contract_mismatches_are_refused_naming_file_and_field(random_model_contract, tmp_path, field, value,
                                                               message):
    contract_path = _copy_model(random_model_contract, tmp_path)
    _edit_contract(contract_path, {field: value})
    if field == 'embedding_dim':    # shrink the class table with it, or the table check fires first
        data = json.loads(contract_path.read_text())
        for entry in data['classes'] + [data['generic_class']]:
            entry['embedding'] = entry['embedding'][:value]
        contract_path.write_text(json.dumps(data))
    with pytest.raises(ContractError, match=message):
        create_backend(contract_path, 'onnxruntime')


def test_missing_class_table_field_is_refused(random_model_contract, tmp_path):
    contract_path = _copy_model(random_model_contract, tmp_path)
    data = json.loads(contract_path.read_text())
    del data['classes']
    contract_path.write_text(json.dumps(data))
    with pytest.raises(ContractError, match=r'tiny\.json: missing field "classes"'):
        create_backend(contract_path, 'onnxruntime')


def test_truncated_onnx_is_refused(random_model_contract, tmp_path):
    contract_path = _copy_model(random_model_contract, tmp_path)
    model_path = contract_path.with_suffix('.onnx')
    model_path.write_bytes(model_path.read_bytes()[:4096])
    with pytest.raises(ContractError, match=r'tiny\.onnx: sha256 .* \(file changed, truncated or tampered\)'):
        create_backend(contract_path, 'onnxruntime')
    # Even with a contract re-hashed to match, a truncated graph never loads.
    _edit_contract(contract_path, {'model_sha256': file_sha256(model_path)})
    with pytest.raises(ContractError, match=r'tiny\.onnx: ONNX Runtime cannot load the model'):
        create_backend(contract_path, 'onnxruntime')
    model_path.unlink()
    with pytest.raises(ContractError, match=r'field "model_file" points at .*tiny\.onnx, which does not exist'):
        create_backend(contract_path, 'onnxruntime')


def test_model_with_other_tensor_names_is_refused(random_model_contract, tmp_path):
    contract_path = _copy_model(random_model_contract, tmp_path)
    graph = helper.make_graph([helper.make_node('Identity', ['input'], ['output'])], 'g',
                              [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 3, 64, 64])],
                              [helper.make_tensor_value_info('output', TensorProto.FLOAT, ['batch', 3, 64, 64])])
    model_path = contract_path.with_suffix('.onnx')
    model_path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)]).SerializeToString())
    _edit_contract(contract_path, {'model_sha256': file_sha256(model_path)})
    with pytest.raises(ContractError, match=r"model inputs \['input'\] do not match the contract's "
                                            r"\['class_embedding', 'image'\]"):
        create_backend(contract_path, 'onnxruntime')


def test_check_signature_wants_a_dynamic_batch_and_float32(random_model_contract):
    contract = load_contract(random_model_contract)
    outputs = {'points': (('batch', 64, 3), 'float32')}
    fixed = {'image': ((1, 3, 64, 64), 'float32'), 'class_embedding': ((-1, 16), 'float32')}
    with pytest.raises(ContractError, match=r'input "image" axis 0 is fixed at 1, .* dynamic "batch" axis'):
        check_signature(contract, 'm.onnx', fixed, outputs)
    half = {'image': ((-1, 3, 64, 64), 'float16'), 'class_embedding': ((-1, 16), 'float32')}
    with pytest.raises(ContractError, match='input "image" has dtype float16'):
        check_signature(contract, 'm.onnx', half, outputs)
    trt_style = {'image': ((-1, 3, 64, 64), 'float32'), 'class_embedding': ((-1, 16), 'float32')}
    check_signature(contract, 'm.engine', trt_style, {'points': ((-1, 64, 3), 'float32')})


@pytest.fixture(scope='module')
def int8_model_contract(random_model_contract, tmp_path_factory) -> Path:
    """Return the tiny random model exported again with an INT8 model, calibrated on synthetic crops."""
    from mesc3d_training.export import export_model
    from mesc3d_training.quantize import CalibrationSet

    loaded = load_model(checkpoint_of(random_model_contract))
    rng = np.random.default_rng(5)
    calibration = CalibrationSet(
        image=rng.random((20, 3, 64, 64), dtype=np.float32),
        embedding=np.repeat(load_contract(random_model_contract).embedding_table()[:1], 20, axis=0),
        points=rng.uniform(-1, 1, (20, 128, 3)).astype(np.float32), items=tuple(f'mug/m{i}/0' for i in range(20)),
        split='val', data_root='synthetic', data_manifest_hash='none')
    return export_model(loaded, tmp_path_factory.mktemp('int8') / 'engines', calibration=calibration)


def test_precision_picks_the_model_file_and_refuses_what_the_contract_lacks(random_model_contract,
                                                                            int8_model_contract, caplog):
    assert load_contract(random_model_contract).precisions == ('fp32', 'fp16')
    assert load_contract(int8_model_contract).precisions == ('fp32', 'fp16', 'int8')
    with pytest.raises(ContractError, match='precision int8 requested, but this export offers only fp32, fp16'):
        create_backend(random_model_contract, 'onnxruntime', precision='int8')
    with pytest.raises(RuntimeError, match='int8 runs on ONNX Runtime only'):
        create_backend(int8_model_contract, 'tensorrt', precision='int8')
    with pytest.raises(ValueError, match='precision must be one of auto, fp32, fp16, int8'):
        create_backend(int8_model_contract, 'onnxruntime', precision='int4')
    assert create_backend(random_model_contract, 'auto').name.endswith(' fp32')     # auto without INT8: float32
    image, embedding = _inputs(3)
    fp32 = create_backend(int8_model_contract, 'onnxruntime', precision='fp32')
    int8 = create_backend(int8_model_contract, 'auto')                              # auto on the CPU: INT8
    fp16 = create_backend(int8_model_contract, 'onnxruntime', precision='fp16')
    assert int8.name.endswith(' int8') and fp16.name.endswith(' fp16')
    reference = fp32.run(image, embedding)
    for backend, tolerance in ((int8, 0.15), (fp16, 0.01)):
        points = backend.run(image, embedding)
        assert points.shape == reference.shape and points.dtype == np.float32
        assert 0 < np.abs(points - reference).mean() < tolerance, backend.name


def test_int8_model_file_is_checked_like_the_others(int8_model_contract, tmp_path):
    copy = _copy_model(int8_model_contract, tmp_path)
    (tmp_path / load_contract(copy).int8_model_file).write_bytes(b'not an onnx file')
    with pytest.raises(ContractError, match='does not match field "int8_model_sha256"'):
        create_backend(copy, 'onnxruntime', precision='int8')
    create_backend(copy, 'onnxruntime', precision='fp32').close()    # the float model is still fine
