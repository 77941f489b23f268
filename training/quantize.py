"""
Static INT8 quantisation of an exported model: ONNX Runtime, QDQ format, calibrated on validation crops.

``mesc3d export`` calls :func:`quantize_int8` after the float models are written when the checkpoint's dataset (or
``--calibration-data``) is there. The image encoder (:data:`QUANTIZED_BLOCKS`, named by the torch module from the
exporter's ``pkg.torch.onnx.name_scopes`` node metadata) is quantised: its :data:`QUANTIZED_OPS` get
QuantizeLinear/DequantizeLinear pairs around the weights (int8 in a 7-bit range, symmetric, per output channel) and
activations (uint8, asymmetric, per tensor), with ranges from min/max calibration over the validation split's
evaluation crops.

**7-bit weights** (``reduce_range``): on x86 CPUs without VNNI (AVX2 only: many robot PCs, AMD Zen 2/3, Intel before
Ice Lake) ONNX Runtime multiplies uint8 activations by int8 weights with ``vpmaddubsw``, whose 16-bit sums of two
products saturate when both use their full range. Measured on such a 2-core AMD EPYC (no AVX-512, no VNNI): the
tiny test model's INT8 output was 0.243 of the float32 spread off with 8-bit weights, 0.031 with 7-bit ones (0.055
with 8-bit on a VNNI machine, where nothing saturates), and the shipped model's INT8 shapes were 0.054 unit radii
(CD-L1) from its float32 ones on demo crops. VNNI and ARM dot-product kernels do not saturate; for them the 7th bit
costs little (models/README.md §Precisions). ONNX Runtime's CPU provider fuses each chain into integer
kernels (QLinearConv, QLinearAdd; VNNI on recent x86, dot-product instructions on ARMv8.2+), so the encoder runs in
uint8 from its first convolution to its token head. The model keeps float32 I/O, so the contract's tensors do not
change.

What stays float32, and why (ONNX Runtime, mobile config, a 2-core AMD EPYC with VNNI; CPU time per call measured
round-robin against float32, and ``SessionOptions.enable_profiling`` per-op totals):

- **MIT** (attention over 24 + 24 tokens of width 32): its MatMuls are too small for integer kernels to pay for the
  QuantizeLinear/DequantizeLinear and layout Transposes around them (quantised, the MIT took 2.9× the float MIT's
  time, and the whole model gained nothing over the encoder-only one).
- **ESM modulations** (γ ⊙ x + β, γ and β from the selection-map MatMuls) and the decoder's **LeakyReLU**: their
  integer forms are separate passes over (B, C, 1024) maps (QLinearLeakyRelu is a table lookup that the float
  convolution would have fused for free), so each quantised decoder convolution reads a uint8 copy of its float
  input and writes a float output. On a VNNI machine the convolutions were worth it even so (3-8 % less CPU per
  call, validation CD-L1 unchanged, 8-bit weights); with the 7-bit weights on an AVX2 machine they are not: the
  encoder alone was faster (batch 5 p50 26.5 vs 27.9 ms, float32 31.6) and as accurate on the validation crops
  (+2.95 vs +3.04 % CD-L1 over float32), so the **decoder's convolutions stay float** as well.
- **Decoder input convolution and head** (one column per object before the broadcast; 3 output channels): nothing
  to gain, and the head writes the points.
- **Class projection** (one Gemm row per object): nothing to gain.

The encoder's ReLU6 (``Clip``) and ReLU are in :data:`QUANTIZED_OPS` so the quantiser removes them and lets the
convolution's uint8 output range do the clipping (``QDQRemovableActivation``): left float, every MobileNetV2
convolution's output is dequantised, clipped and requantised at run time (~70 QuantizeLinear/DequantizeLinear
kernels per call, nearly a fifth of the INT8 model's time), which is what made the first INT8 mobile model slower than
float32 at 5 objects. ``python -m mesc3d_training.bench.quantization CHECKPOINT`` scores these choices and each
quantised block on the validation split. Which crops calibrated the model is recorded in the contract's
``quantization`` field (split, manifest hash and every ``category/object/view``).
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
from mesc3d_ros.inference import SessionSettings
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.data.layout import read_manifest
from mesc3d_training.metrics import reconstruction_metrics

LOGGER = logging.getLogger(__name__)

CALIBRATION_SPLIT = 'val'
"""Calibration (and the choice of float blocks) uses validation crops only; test stays held out for the card."""
QUANTIZED_OPS = ('Conv', 'Clip', 'Relu', 'Add', 'MatMul', 'Gemm', 'MaxPool')
"""The encoder's op types: convolutions and its token head's MatMul/Gemm, the activations the quantiser folds into
them (Clip = MobileNetV2's ReLU6, Relu), residual Adds and the ResNet stem's MaxPool, so its feature maps stay uint8
between kernels."""
QUANTIZED_BLOCKS: tuple[str, ...] = ('image_encoder',)
"""Module blocks (or their parents) quantised; everything else stays float32 (why: the module docstring)."""
FLOAT_BLOCKS: tuple[str, ...] = ('image_encoder.trunk.1',)
"""Blocks inside QUANTIZED_BLOCKS that stay float32: MobileNetV2's first inverted-residual block (a depthwise 3×3
on 32 channels at half the input resolution, projected to 16 channels without an activation, so its output is signed
and per-tensor uint8 fits it badly). Measured on the shipped model's validation crops (``python -m
mesc3d_training.bench.quantization``): INT8 +3.3 % CD-L1 over float32 with it quantised, +0.8 % with it float (every
other block kept float alone: +2.6 … +3.4 %), at 1.34× instead of 1.41× the float32 speed."""
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


def inside(block: str, parents: tuple[str, ...]) -> bool:
    """
    Tell whether ``block`` is one of ``parents`` or lies inside one.

    For example ``decoder.modulations.2`` lies inside ``decoder.modulations``; every block lies inside ``''``.
    """
    return any(parent in ('', block) or block.startswith(parent + '.') for parent in parents)


def quantizable_blocks(model: onnx.ModelProto, op_types: tuple[str, ...] = QUANTIZED_OPS) -> list[str]:
    """Blocks holding one of ``op_types``, in graph order."""
    blocks = [block_of(node) for node in model.graph.node if node.op_type in op_types]
    return list(dict.fromkeys(blocks))


def quantized_block(block: str, blocks: tuple[str, ...] = QUANTIZED_BLOCKS,
                    float_blocks: tuple[str, ...] = FLOAT_BLOCKS) -> bool:
    """Tell whether ``block`` is quantised: inside one of ``blocks`` and not inside one of ``float_blocks``."""
    return inside(block, blocks) and not inside(block, float_blocks)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: CalibrationSet,
                  blocks: tuple[str, ...] = QUANTIZED_BLOCKS, float_blocks: tuple[str, ...] = FLOAT_BLOCKS,
                  cache_path: Path | None = None, op_types: tuple[str, ...] = QUANTIZED_OPS) -> dict:
    """
    Write the INT8 QDQ model of ``fp32_path`` to ``out_path``; returns the record the contract keeps.

    The nodes of ``op_types`` inside ``blocks`` but not inside ``float_blocks`` are quantised, the rest stays float.
    ``cache_path``: a calibration-range cache (ONNX Runtime's JSON), reused when it exists, so that several
    variants of one model are calibrated once.
    """
    model = onnx.load(str(fp32_path))
    chosen = [node.name for node in model.graph.node
              if node.op_type in op_types and quantized_block(block_of(node), blocks, float_blocks)]
    if not chosen:
        raise ValueError(f'{fp32_path.name}: no {"/".join(op_types)} node inside blocks {list(blocks)} (less '
                         f'{list(float_blocks)}); its blocks: {quantizable_blocks(model, op_types)}')
    quantize_static(str(fp32_path), str(out_path), _Reader(calibration), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_quantize=chosen,
                    reduce_range=True,  # 7-bit weights: see the module docstring
                    calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=cache_path,
                    # Asymmetric activations let the quantiser drop Clip/Relu into the convolution's uint8 range.
                    extra_options={'ActivationSymmetric': False, 'WeightSymmetric': True})
    return {'method': 'onnxruntime.quantization.quantize_static, QDQ, MinMax calibration',
            'onnxruntime': ort.__version__,
            'weights': 'int8 symmetric in a 7-bit range (reduce_range: no u8s8 saturation without VNNI), per output '
                       'channel',
            'activations': 'uint8 asymmetric, per tensor', 'quantized_op_types': list(op_types),
            'quantized_blocks': list(blocks), 'float_blocks': list(float_blocks), 'quantized_nodes': len(chosen),
            'float_nodes': sum(node.op_type in op_types for node in model.graph.node) - len(chosen),
            'calibration': calibration.record()}


def run_model(path: Path, image: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    """(B, N, 3) float32 points of an ONNX model on the CPU, in calibration-sized batches."""
    session = ort.InferenceSession(str(path), SessionSettings().options(), providers=['CPUExecutionProvider'])
    return np.concatenate([session.run([OUTPUT_POINTS], {INPUT_IMAGE: image[start:start + CALIBRATION_BATCH],
                                                         INPUT_CLASS_EMBEDDING: embedding[start:start +
                                                                                          CALIBRATION_BATCH]})[0]
                           for start in range(0, len(image), CALIBRATION_BATCH)])


def cd_l1(points: np.ndarray, ground_truth: np.ndarray) -> float:
    """Mean CD-L1 (``metrics.reconstruction_metrics``) of predictions against ground truth, both unit ball."""
    metrics = reconstruction_metrics(torch.from_numpy(points.astype(np.float32)), torch.from_numpy(ground_truth))
    return float(metrics['cd_l1'].mean())
