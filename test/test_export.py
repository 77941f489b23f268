"""``mesc3d export``: a real tiny MESC-3D through the real CLI, then the files it wrote, checked by ONNX and ORT."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mesc3d_ros.config import config_hash, load_config
from mesc3d_ros.contract import (INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, ClassEntry, file_sha256,
                                 load_contract, verify_model_file)
from mesc3d_training import cli, export
from mesc3d_training.checkpoint import load_model, save_model
from mesc3d_training.model import build_model
from mesc3d_training.model.text_prior import TextPrior
from model_fixtures import tiny_config


DIM = 384
"""The real text prior's width (MiniLM): the class table and the extra classes come from it."""


@pytest.fixture(scope='module')
def prior() -> TextPrior:
    torch.manual_seed(3)
    return TextPrior(tiny_config(text_dim=DIM).model)     # random (untrained) prompts, frozen MiniLM


@pytest.fixture(scope='module')
def exported(tmp_path_factory: pytest.TempPathFactory, prior: TextPrior) -> tuple[Path, Path]:
    """(checkpoint YAML, contract JSON) of a tiny random model exported by ``mesc3d export``, plus two classes."""
    folder = tmp_path_factory.mktemp('export')
    cfg = tiny_config(text_dim=DIM, frame='canonical')
    table = prior.class_table(['mug', 'bottle', 'object']).numpy()
    entries = tuple(ClassEntry(name=name, embedding=tuple(float(v) for v in row), size_m=size)
                    for name, row, size in zip(('mug', 'bottle', 'object'), table, (0.1, 0.25, 0.2)))
    checkpoint = save_model(folder / 'tiny', build_model(cfg.model).eval(), cfg, entries[:2], entries[2],
                            data_manifest_hash='manifest-1', metrics={'cd_l1': 0.042},
                            prompts=prior.prompts.state_dict())
    assert cli.main(['export', str(checkpoint), '--out-dir', str(folder / 'engines'),
                     '--extra-classes', 'kettle:0.3, stapler']) == 0
    return checkpoint, folder / 'engines' / 'tiny.json'


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def _inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {INPUT_IMAGE: rng.random((batch, 3, 64, 64), dtype=np.float32),
            INPUT_CLASS_EMBEDDING: rng.normal(size=(batch, DIM)).astype(np.float32)}


def test_export_writes_model_fp16_model_contract_and_config(exported):
    checkpoint, contract_path = exported
    contract = load_contract(contract_path)
    assert verify_model_file(contract, contract_path).name == 'tiny.onnx'
    assert verify_model_file(contract, contract_path, 'fp16').name == 'tiny.fp16.onnx'
    cfg = load_config(contract_path.with_suffix('.yaml'))
    assert cfg == tiny_config(text_dim=DIM, frame='canonical')
    assert contract.config_hash == config_hash(cfg)
    assert (contract.image_size, contract.embedding_dim, contract.num_points) == (64, DIM, 64)
    assert contract.output_frame == 'canonical' and contract.units == 'unit_ball'
    assert contract.crop_padding == cfg.data.crop_padding == 0.15
    assert contract.class_names == ('mug', 'bottle', 'kettle', 'stapler') and contract.generic_class.name == 'object'
    assert contract.classes[:2] == load_model(checkpoint).classes
    assert contract.metrics == {'cd_l1': 0.042} and contract.data_manifest_hash == 'manifest-1'
    assert contract.model_sha256 == file_sha256(contract_path.with_suffix('.onnx'))
    assert not list(contract_path.parent.glob('*.tmp')), 'no temporary files may be left behind'


def test_graph_is_standard_folded_opset18_with_contract_io(exported):
    _, contract_path = exported
    model = onnx.load(contract_path.with_suffix('.onnx'))
    onnx.checker.check_model(model, full_check=True)
    export.check_graph(model, 'tiny')        # standard domain only, nothing input-independent left
    assert {(entry.domain, entry.version) for entry in model.opset_import} == {('', 18)}
    assert load_contract(contract_path).opset == 18

    def signature(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    assert signature(model.graph.input) == {INPUT_IMAGE: ['batch', 3, 64, 64], INPUT_CLASS_EMBEDDING: ['batch', DIM]}
    assert signature(model.graph.output) == {OUTPUT_POINTS: ['batch', 64, 3]}
    # The sphere tokens are a (T, D) = (4, 8) constant of the model: it must be an initializer, not a subgraph.
    tokens = load_model(exported[0]).model.point_tokens(1)[0].detach().numpy()
    assert any(numpy_helper.to_array(init).squeeze().shape == (4, 8)
               and np.allclose(numpy_helper.to_array(init).squeeze(), tokens) for init in model.graph.initializer)


def test_extra_classes_come_from_the_checkpoints_trained_prompts(exported, prior):
    contract = load_contract(exported[1])
    kettle, stapler = contract.classes[2:]
    assert (kettle.size_m, stapler.size_m) == (0.3, contract.generic_class.size_m)
    np.testing.assert_allclose(contract.embedding_table()[2:], prior.class_table(['kettle', 'stapler']).numpy(),
                               atol=1e-5)
    # The same name through other (fresh) prompts lands elsewhere: the saved prompts are what was used.
    other = TextPrior(tiny_config(text_dim=DIM).model)
    assert np.abs(other.class_table(['kettle']).numpy()[0] - np.asarray(kettle.embedding)).max() > 1e-3


def test_extra_classes_need_saved_prompts_and_valid_sizes(exported, tmp_path):
    loaded = load_model(exported[0])
    without = dataclasses.replace(loaded, prompts={})
    with pytest.raises(export.ExportError, match='extra classes need the trained 3DSPL prompts'):
        export.embed_extra_classes(without, ('kettle',), (None,))
    assert export.parse_extra_classes(' kettle:0.25 ,stapler,') == (('kettle', 'stapler'), (0.25, None))
    with pytest.raises(ValueError, match='size of "kettle" must be metres'):
        export.parse_extra_classes('kettle:big')
    with pytest.raises(ValueError, match='size of "kettle" must be positive'):
        export.parse_extra_classes('kettle:-1')


def test_parity_with_torch_is_recorded_and_holds_on_fresh_inputs(exported):
    checkpoint, contract_path = exported
    contract = load_contract(contract_path)
    assert 0 <= contract.parity['fp32_max_abs'] <= 1e-4
    assert 0 < contract.parity['fp16_max_abs'] < 1e-2
    assert 'onnxruntime' in contract.parity['fp16_method']
    model = load_model(checkpoint).model
    feeds = _inputs(batch=4, seed=11)
    with torch.inference_mode():
        reference = model(torch.from_numpy(feeds[INPUT_IMAGE]), torch.from_numpy(feeds[INPUT_CLASS_EMBEDDING]))
    (points,) = _session(contract_path.with_suffix('.onnx')).run(None, feeds)
    assert np.abs(points - reference.numpy()).max() <= 1e-4
    (points16,) = _session(contract_path.parent / contract.fp16_model_file).run(None, feeds)
    assert points16.dtype == np.float32 and np.abs(points16 - reference.numpy()).max() < 1e-2


def test_dynamic_batch_one_and_five_give_the_same_items(exported):
    _, contract_path = exported
    session = _session(contract_path.with_suffix('.onnx'))
    feeds = _inputs(batch=5, seed=5)
    (batched,) = session.run(None, feeds)
    assert batched.shape == (5, 64, 3)
    singles = np.concatenate([session.run(None, {k: v[i:i + 1] for k, v in feeds.items()})[0] for i in range(5)])
    np.testing.assert_allclose(batched, singles, atol=1e-6)
    assert np.abs(batched[0] - batched[1]).max() > 1e-4, 'different inputs must give different shapes'


def test_parity_failure_fails_loudly_and_writes_nothing(exported, tmp_path, monkeypatch):
    checkpoint, _ = exported
    # A negative tolerance makes any measured error (even 0) a failure: this checks the failure path itself.
    monkeypatch.setattr(export, 'FP32_TOLERANCE', -1.0)
    with pytest.raises(export.ExportError, match=r'tiny: ONNX Runtime differs from torch by .*nothing was written'):
        export.export_model(load_model(checkpoint), tmp_path / 'out')
    assert not list((tmp_path / 'out').iterdir())


def test_export_rejects_old_opsets_and_duplicate_classes(exported, tmp_path):
    loaded = load_model(exported[0])
    with pytest.raises(ValueError, match='opset 17 < 18'):
        export.export_model(loaded, tmp_path, opset=17)
    with pytest.raises(ValueError, match=r"duplicate class names .*'mug'"):
        export.export_model(loaded, tmp_path, extra_classes=(loaded.classes[0],))


def test_check_graph_rejects_unfolded_constants_and_custom_ops():
    def graph(nodes, initializers):
        inputs = [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])]
        outputs = [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])]
        return helper.make_model(helper.make_graph(nodes, 'g', inputs, outputs, initializers),
                                 opset_imports=[helper.make_opsetid('', 18), helper.make_opsetid('custom', 1)])

    constants = [numpy_helper.from_array(np.ones(1, np.float32), name) for name in ('a', 'b')]
    foldable = graph([helper.make_node('Add', ['a', 'b'], ['c']), helper.make_node('Mul', ['x', 'c'], ['y'])],
                     constants)
    with pytest.raises(export.ExportError, match=r"input-independent nodes .*\['Add"):
        export.check_graph(foldable, 'm')
    custom = graph([helper.make_node('Fps', ['x'], ['y'], domain='custom')], [])
    with pytest.raises(export.ExportError, match=r'custom-domain ops .*custom::Fps'):
        export.check_graph(custom, 'm')
    clean = graph([helper.make_node('Mul', ['x', 'a'], ['y'])], constants[:1])
    export.check_graph(clean, 'm')


def test_contract_json_is_plain_and_complete(exported):
    data = json.loads(exported[1].read_text())
    assert {'model_sha256', 'fp16_model_sha256', 'config', 'config_hash', 'parity', 'crop_padding',
            'classes', 'generic_class', 'output_frame', 'units', 'opset', 'metrics'} <= set(data)


def test_int8_export_is_qdq_calibrated_on_recorded_crops(tmp_path):
    """A real generated dataset's crops calibrate the INT8 model; the contract records them and the graph is QDQ."""
    from mesc3d_training.data.generate import TINY_OBJECT_IDS, make_dataset
    from mesc3d_training.quantize import QUANTIZED_BLOCKS, QUANTIZED_OPS, load_calibration_set

    make_dataset(tmp_path / 'data', object_ids=TINY_OBJECT_IDS, views=2, workers=1, progress=False)
    cfg = tiny_config(text_dim=16, frame='viewer')
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(tmp_path / 'data')))
    torch.manual_seed(0)
    table = tuple(ClassEntry(name=name, embedding=tuple(float(v) for v in np.eye(16)[i]), size_m=0.2)
                  for i, name in enumerate(('mug', 'object')))
    checkpoint = save_model(tmp_path / 'tiny', build_model(cfg.model).eval(), cfg, table[:1], table[1],
                            data_manifest_hash='m', metrics={})
    loaded = load_model(checkpoint)
    calibration = load_calibration_set(cfg, loaded.classes, loaded.generic_class, split='train')
    assert calibration.image.shape[1:] == (3, 64, 64) and len(calibration.items) == calibration.image.shape[0] > 0
    contract_path = export.export_model(loaded, tmp_path / 'engines', calibration=calibration)

    contract = load_contract(contract_path)
    assert contract.precisions == ('fp32', 'fp16', 'int8')
    path = verify_model_file(contract, contract_path, 'int8')
    assert path.name == 'tiny.int8.onnx'
    record = contract.quantization
    assert record['calibration']['items'] == list(calibration.items) and record['calibration']['split'] == 'train'
    assert record['calibration']['data_manifest_hash'] == calibration.data_manifest_hash
    assert record['quantized_blocks'] == list(QUANTIZED_BLOCKS) and record['quantized_nodes'] > 0
    assert set(record['calibration_cd_l1']) == {'fp32', 'int8'}
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    assert any(init.data_type == TensorProto.INT8 for init in graph.initializer), 'weights are stored as int8'
    quantized_inputs = {node.output[0] for node in graph.node if node.op_type == 'DequantizeLinear'}
    assert any(set(node.input) & quantized_inputs for node in graph.node if node.op_type in QUANTIZED_OPS)
    points = _session(path).run([OUTPUT_POINTS], {INPUT_IMAGE: calibration.image[:2],
                                                  INPUT_CLASS_EMBEDDING: calibration.embedding[:2]})[0]
    assert points.shape == (2, 64, 3) and np.isfinite(points).all()
