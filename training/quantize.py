"""
Static INT8 quantisation of an exported model: ONNX Runtime, QDQ format, calibrated on validation crops.

``mesc3d export`` calls :func:`quantize_int8` after the float models are written when the checkpoint's dataset (or
``--calibration-data``) is there: the float32 ONNX gets QuantizeLinear/DequantizeLinear pairs around the weights
(int8, symmetric, per output channel) and activations (uint8, asymmetric, per tensor) of :data:`QUANTIZED_OPS`, with
ranges from min/max calibration over the validation split's evaluation crops. ONNX Runtime's CPU provider fuses
each pair chain into integer kernels (VNNI on recent x86, dot-product instructions on ARMv8.2+). LayerNorm,
Softmax, Erf (GELU), Tanh, Div, Split, Expand and the attention's reshapes stay float32. The model keeps float32 I/O,
so the contract's tensors do not change.

Blocks of the model (named by their torch module, from the exporter's ``pkg.torch.onnx.name_scopes`` node
metadata) listed in :data:`FLOAT_BLOCKS` stay float too. Both choices were measured on the validation split
(``python -m mesc3d_training.bench.quantization CHECKPOINT``; the table and the reasons are in models/README.md).
Which crops calibrated the model is recorded in the contract's ``quantization`` field (split, manifest hash and every
``category/object/view``).
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)

from mesc3d_ros.config import Config
from mesc3d_ros.contract import INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, ClassEntry
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.data.layout import read_manifest
from mesc3d_training.metrics import reconstruction_metrics

LOGGER = logging.getLogger(__name__)

CALIBRATION_SPLIT = 'val'
"""Calibration (and the choice of float blocks) uses validation crops only; test stays held out for the card."""
QUANTIZED_OPS = ('Conv', 'MatMul', 'Gemm', 'Add', 'Mul', 'LeakyRelu', 'Relu', 'MaxPool')
"""The ops holding the multiply-accumulates, plus the element-wise ops between them: quantising those too keeps the
decoder's (B, C, 1024) feature maps in uint8 between kernels instead of dequantising them for every Add/Mul (18 % of
the Conv/MatMul/Gemm-only model's time in ONNX Runtime's profile), at equal validation CD-L1 (models/README.md)."""
FLOAT_BLOCKS: tuple[str, ...] = ('decoder.modulations',)
"""Module blocks (or their parents) kept float32: the ESM modulations multiply by the factorised selection maps,
constant (rank, N) matrices that ONNX Runtime does not fuse into an integer MatMul, so their int8 form is dequantised
on every call (8 % of that profile); accuracy does not need it either way (models/README.md)."""
CALIBRATION_BATCH = 16
BLOCK_DEPTH = 3
"""Module path components that name a block: ``mit.blocks.0``, ``decoder.convs.2``,
``image_encoder.backbone.layer1``."""


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed validation crops, as the node feeds them, plus their ground truth for scoring."""

    image: np.ndarray
    """(B, 3, S, S) float32 RGB in [0, 1]: the dataset's evaluation crops (``preprocess.crop_and_resize``)."""
    embedding: np.ndarray
    """(B, D) float32 class embeddings of the items' categories."""
    points: np.ndarray
    """(B, G, 3) float32 ground truth, unit ball, in the data frame."""
    items: tuple[str, ...]
    """``category/object_id/view`` of every crop, in order."""
    split: str
    data_root: str
    data_manifest_hash: str

    def record(self) -> dict:
        """Return what the contract keeps about the calibration crops."""
        return {'split': self.split, 'data_root': self.data_root, 'data_manifest_hash': self.data_manifest_hash,
                'count': len(self.items), 'items': list(self.items)}


def calibration_available(cfg: Config) -> bool:
    """Whether the config's dataset is on this machine (a generated layout with a manifest)."""
    return cfg.data.layout == 'generated' and (Path(cfg.data.root) / 'manifest.json').is_file()


def load_calibration_set(cfg: Config, classes: tuple[ClassEntry, ...], generic: ClassEntry,
                         split: str = CALIBRATION_SPLIT) -> CalibrationSet:
    """Every evaluation item of ``split`` (fixed view, centred crop, seeded ground truth): deterministic."""
    dataset = ReconstructionDataset(cfg.data, split, cfg.model.image_size, train=False)
    rows = {entry.name: entry.embedding for entry in classes}
    images, embeddings, points, items = [], [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        images.append(sample['image'].numpy())
        embeddings.append(rows.get(sample['category'], generic.embedding))
        points.append(sample['points'].numpy())
        items.append(f'{sample["category"]}/{sample["object_id"]}/{sample["view"]}')
    return CalibrationSet(image=np.stack(images).astype(np.float32), embedding=np.asarray(embeddings, np.float32),
                          points=np.stack(points).astype(np.float32), items=tuple(items), split=split,
                          data_root=str(cfg.data.root),
                          data_manifest_hash=read_manifest(Path(cfg.data.root))['manifest_hash'])


class _Reader(CalibrationDataReader):
    """Feeds the calibration set to ONNX Runtime's calibrator in batches."""

    def __init__(self, calibration: CalibrationSet) -> None:
        self._batches = iter(range(0, len(calibration.items), CALIBRATION_BATCH))
        self._calibration = calibration

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._batches, None)
        if start is None:
            return None
        stop = start + CALIBRATION_BATCH
        return {INPUT_IMAGE: self._calibration.image[start:stop],
                INPUT_CLASS_EMBEDDING: self._calibration.embedding[start:stop]}


def block_of(node: onnx.NodeProto) -> str:
    """Return the torch module block a node comes from (``mit.blocks.0``), from the exporter's name-scope metadata."""
    meta = {prop.key: prop.value for prop in node.metadata_props}
    scopes = ast.literal_eval(meta.get('pkg.torch.onnx.name_scopes', '[]'))
    modules = [scope for scope in scopes[:-1] if scope]     # the last scope is the op itself
    return '.'.join(modules[-1].split('.')[:BLOCK_DEPTH]) if modules else ''


def _inside(block: str, parents: tuple[str, ...]) -> bool:
    """
    Tell whether ``block`` is one of ``parents`` or lies inside one.

    For example ``decoder.modulations.2`` lies inside ``decoder.modulations``.
    """
    return any(block == parent or block.startswith(parent + '.') for parent in parents)


def quantizable_blocks(model: onnx.ModelProto) -> list[str]:
    """Blocks holding a quantised op type, in graph order."""
    blocks = [block_of(node) for node in model.graph.node if node.op_type in QUANTIZED_OPS]
    return list(dict.fromkeys(blocks))


def quantize_int8(fp32_path: Path, out_path: Path, calibration: CalibrationSet,
                  float_blocks: tuple[str, ...] = FLOAT_BLOCKS, cache_path: Path | None = None,
                  op_types: tuple[str, ...] = QUANTIZED_OPS) -> dict:
    """
    Write the INT8 QDQ model of ``fp32_path`` to ``out_path``; returns the record the contract keeps.

    ``cache_path``: a calibration-range cache (ONNX Runtime's JSON), reused when it exists, so that several
    variants of one model are calibrated once.
    """
    model = onnx.load(str(fp32_path))
    excluded = [node.name for node in model.graph.node
                if node.op_type in op_types and _inside(block_of(node), float_blocks)]
    unknown = [block for block in float_blocks if not any(_inside(b, (block,)) for b in quantizable_blocks(model))]
    if unknown:     # another config may lack a block (no selection maps): nothing to keep in float then
        LOGGER.warning('float blocks %s are not in %s; its blocks: %s', unknown, fp32_path.name,
                       quantizable_blocks(model))
    quantize_static(str(fp32_path), str(out_path), _Reader(calibration), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                    calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=cache_path,
                    extra_options={'ActivationSymmetric': False, 'WeightSymmetric': True})
    quantized = sum(node.op_type in op_types for node in model.graph.node) - len(excluded)
    return {'method': 'onnxruntime.quantization.quantize_static, QDQ, MinMax calibration',
            'onnxruntime': ort.__version__, 'weights': 'int8 symmetric, per output channel',
            'activations': 'uint8 asymmetric, per tensor', 'quantized_op_types': list(op_types),
            'quantized_nodes': quantized, 'float_blocks': list(float_blocks), 'float_nodes': len(excluded),
            'calibration': calibration.record()}


def run_model(path: Path, image: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    """(B, N, 3) float32 points of an ONNX model on the CPU, in calibration-sized batches."""
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return np.concatenate([session.run([OUTPUT_POINTS], {INPUT_IMAGE: image[start:start + CALIBRATION_BATCH],
                                                         INPUT_CLASS_EMBEDDING: embedding[start:start +
                                                                                          CALIBRATION_BATCH]})[0]
                           for start in range(0, len(image), CALIBRATION_BATCH)])


def cd_l1(points: np.ndarray, ground_truth: np.ndarray) -> float:
    """Mean CD-L1 (``metrics.reconstruction_metrics``) of predictions against ground truth, both unit ball."""
    metrics = reconstruction_metrics(torch.from_numpy(points.astype(np.float32)), torch.from_numpy(ground_truth))
    return float(metrics['cd_l1'].mean())
