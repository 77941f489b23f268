"""
INT8 quantisation (``training/quantize.py``): what is quantised, what ONNX Runtime makes of it, and its error.

A tiny MobileNetV2 model (the CPU recipe's encoder, random weights) calibrated on seeded random crops: enough to see
which nodes get QDQ pairs and which kernels ONNX Runtime fuses them into, without a dataset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mesc3d_ros.contract import INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS
from mesc3d_ros.inference import SessionSettings
from mesc3d_training.checkpoint import LoadedModel
from mesc3d_training.export import export_model
from mesc3d_training.model import build_model
from mesc3d_training.quantize import (FLOAT_BLOCKS, QUANTIZED_BLOCKS, QUANTIZED_OPS, CalibrationSet, block_of, inside,
                                      quantize_int8, quantized_block)
from model_fixtures import random_class_table, tiny_config

INT8_TOLERANCE = 0.15
"""RMS error of the INT8 tiny model against float32 on its calibration crops, as a share of the float32 points'
standard deviation (predicting their mean scores 1). Measured on this random-weight model: 0.031 with the 7-bit weights
on an AVX2 machine without VNNI, where 8-bit ones gave 0.243 (u8s8 saturation, training/quantize.py) and 0.055 on
a VNNI machine."""


@pytest.fixture(scope='module')
def tiny_mobile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CalibrationSet]:
    """(float32 ONNX, INT8 ONNX, calibration set) of a tiny MobileNetV2-encoder model with spatial tokens."""
    out = tmp_path_factory.mktemp('tiny_mobile')
    cfg = tiny_config(name='tiny_mobile')
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_backbone='mobilenet_v2',
                                                             image_tokens='spatial'))
    torch.manual_seed(0)
    table = random_class_table(('mug', 'object'), cfg.model.text_dim, seed=0)
    loaded = LoadedModel(model=build_model(cfg.model).eval(), cfg=cfg, classes=table[:1], generic_class=table[1],
                         data_manifest_hash='random-weights', metrics={}, prompts={})
    fp32_path = export_model(loaded, out).with_suffix('.onnx')
    rng = np.random.default_rng(0)
    count = 8
    calibration = CalibrationSet(
        image=rng.random((count, 3, cfg.model.image_size, cfg.model.image_size), dtype=np.float32),
        embedding=np.repeat(np.asarray([table[0].embedding], np.float32), count, axis=0),
        points=np.zeros((count, cfg.model.num_points, 3), np.float32), items=tuple(f'mug/{i}/0' for i in range(count)),
        split='random', data_root='', data_manifest_hash='random')
    int8_path = out / 'tiny_mobile.int8.onnx'
    record = quantize_int8(fp32_path, int8_path, calibration)
    assert record['quantized_blocks'] == list(QUANTIZED_BLOCKS) and record['quantized_nodes'] > 0
    assert record['float_blocks'] == list(FLOAT_BLOCKS)
    return fp32_path, int8_path, calibration


def _dequantized(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors that DequantizeLinear nodes write."""
    return {node.output[0] for node in graph.node if node.op_type == 'DequantizeLinear'}


def _fed_by_dequantize(graph: onnx.GraphProto) -> dict[str, bool]:
    """Node name -> whether any of its inputs comes out of a DequantizeLinear."""
    dequantized = _dequantized(graph)
    return {node.name: bool(set(node.input) & dequantized) for node in graph.node}


def test_the_encoder_is_quantised_and_the_rest_stays_float(tiny_mobile):
    _, int8_path, _ = tiny_mobile
    graph = onnx.load(str(int8_path)).graph
    fed = _fed_by_dequantize(graph)
    chosen = [node for node in graph.node if quantized_block(block_of(node))]
    convs = [node for node in chosen if node.op_type == 'Conv']
    assert {block_of(node).split('.')[0] for node in convs} == {'image_encoder'}
    assert all(fed[node.name] for node in convs), 'every chosen convolution reads QDQ tensors'
    assert not any(node.op_type == 'Clip' for node in chosen), 'ReLU6 is folded into the uint8 range'
    # MobileNetV2's first inverted-residual block stays float inside the encoder (quantize.FLOAT_BLOCKS).
    # Its convolutions keep float weights (they read the previous block's dequantised output).
    kept_float = [node for node in graph.node if node.op_type == 'Conv' and inside(block_of(node), FLOAT_BLOCKS)]
    dequantized = _dequantized(graph)
    assert kept_float and not any(node.input[1] in dequantized for node in kept_float)
    rest = [node for node in graph.node if node.op_type in (*QUANTIZED_OPS, 'LeakyRelu', 'Mul')
            and not inside(block_of(node), QUANTIZED_BLOCKS)]
    assert {block_of(node).split('.')[0] for node in rest} >= {'mit', 'decoder', 'class_proj'}
    assert not any(fed[node.name] for node in rest), 'MIT, decoder and class projection stay float'


def test_onnx_runtime_runs_the_quantised_blocks_in_integer_kernels(tiny_mobile, tmp_path):
    """
    Each QDQ chain fuses into QLinearConv; quantising happens at block entries only.

    Two QuantizeLinear: at the encoder's input, and after the block that stays float (FLOAT_BLOCKS).
    """
    _, int8_path, _ = tiny_mobile
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED   # no NCHWc: a savable graph
    options.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
    ort.InferenceSession(str(int8_path), options, providers=['CPUExecutionProvider'])
    ops = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    source = [node for node in onnx.load(str(int8_path)).graph.node
              if node.op_type == 'Conv' and quantized_block(block_of(node))]
    assert ops.count('QLinearConv') == len(source)
    # Left float, each ReLU6 would cost a DequantizeLinear and a QuantizeLinear of its own (dozens).
    assert ops.count('QuantizeLinear') == 1 + len(FLOAT_BLOCKS), ops


def test_int8_matches_float32_within_tolerance(tiny_mobile):
    fp32_path, int8_path, calibration = tiny_mobile
    feed = {INPUT_IMAGE: calibration.image, INPUT_CLASS_EMBEDDING: calibration.embedding}
    outputs = [ort.InferenceSession(str(path), SessionSettings().options(), providers=['CPUExecutionProvider'])
               .run([OUTPUT_POINTS], feed)[0] for path in (fp32_path, int8_path)]
    error = np.sqrt(np.mean((outputs[1] - outputs[0]) ** 2)) / outputs[0].std()
    assert 0.0 < error < INT8_TOLERANCE, error


def test_block_selection():
    assert inside('decoder.modulations.2', ('decoder.modulations',)) and inside('mit.blocks.0', ('',))
    assert not inside('decoder.convs.0', ('decoder.modulations',)) and not inside('mit', ())


def test_quantising_nothing_is_an_error(tiny_mobile, tmp_path):
    fp32_path, _, calibration = tiny_mobile
    with pytest.raises(ValueError, match='no Conv node inside blocks'):
        quantize_int8(fp32_path, tmp_path / 'x.onnx', calibration, blocks=('no_such_block',), op_types=('Conv',))
