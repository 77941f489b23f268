"""
``mesc3d ship models/<name>.safetensors``: the deployable form of a shipped model, committed beside it.

The node cannot run a training checkpoint and a ROS install has no torch to export one, so every shipped model
``models/<name>.safetensors`` (+ ``.yaml``) has its deployable form committed next to it, **without a second copy of
the weights**:

- ``models/<name>.onnx``         the model's graph (exported like ``mesc3d export``, but with every trained tensor
                                 left as it is in the checkpoint instead of folded) whose weights are ONNX *external
                                 data* pointing at their bytes inside ``<name>.safetensors`` (float16 there, cast to
                                 float32 in the graph; ONNX Runtime folds the casts when it loads the model). Only
                                 tensors the checkpoint does not hold (normalisation constants, a few hundred KB) are
                                 stored in the graph file;
- ``models/<name>.int8.onnx``    the INT8 model for ONNX Runtime on CPUs (``quantize.py``), calibrated on the validation
                                 crops of the checkpoint's dataset; only when that dataset is on this machine. It holds
                                 its own weights (int8, and float32 where the model stays float);
- ``models/<name>.json``         its model contract (``model_file`` = the float32 graph above, ``int8_model_file``;
                                 no separate float16 model);
- ``models/<name>.source.json``  the sha256 of the checkpoint files it was made from, and which file holds the
                                 weights: ``mesc3d_ros.package_share.resolve_model`` refuses the model when that file
                                 changed (the offsets would point at other bytes), and a test fails until it is shipped
                                 again.

The output is checked against torch before anything is written. setup.py installs all of it to
``share/mesc3d_ros/models/``; the node's ``model_path`` takes the bare ``<name>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript.optimizer
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

from mesc3d_ros.contract import (INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, ModelContract, file_sha256,
                                 load_contract, write_atomic)
from mesc3d_ros.package_share import EXTERNAL_WEIGHTS_KEY, safetensors_header
from mesc3d_training.checkpoint import checkpoint_stem, load_model
from mesc3d_training.export import (FP32_TOLERANCE, PARITY_BATCH, calibration_for, export_model, parity_inputs,
                                    trace_to_onnx)

LOGGER = logging.getLogger(__name__)


def source_record(stem: Path) -> dict[str, str]:
    """Which checkpoint bytes a deployable form was made from (the format of ``mesc3d demo``'s source files)."""
    return {'checkpoint': stem.name, 'weights_sha256': file_sha256(stem.with_suffix('.safetensors')),
            'meta_sha256': file_sha256(stem.with_suffix('.yaml')),
            EXTERNAL_WEIGHTS_KEY: stem.with_suffix('.safetensors').name}


def unfolded_graph(model: torch.nn.Module, contract: ModelContract) -> onnx.ModelProto:
    """
    Return the torch.export ONNX graph with the module's parameters and buffers as named initializers.

    Initializers are named as in the state dict; shape-only subgraphs are folded, nothing that reads a weight is.
    """
    program = trace_to_onnx(model, contract, contract.opset, optimize=False)
    proto = program.model_proto
    # input_size_limit=0: fold only nodes without tensor inputs (sequence and shape plumbing ORT cannot fold itself).
    onnxscript.optimizer.fold_constants(proto, input_size_limit=0, output_size_limit=1 << 16)
    onnxscript.optimizer.remove_unused_nodes(proto)
    return proto


def reference_checkpoint_weights(graph: onnx.ModelProto, weights: Path) -> int:
    """
    Point every initializer equal to a float16 tensor of ``weights`` at that tensor's bytes (external data).

    Cast to float32 by a node in front of the graph; returns how many were replaced.
    """
    header, data_start = safetensors_header(weights)
    tensors = load_file(weights)
    kept, casts = [], []
    for init in graph.graph.initializer:
        info = header.get(init.name)
        if (info is None or info['dtype'] != 'F16'
                or not np.array_equal(tensors[init.name].astype(np.float32), numpy_helper.to_array(init))):
            kept.append(init)
            continue
        begin, end = info['data_offsets']
        half = TensorProto(name=f'{init.name}__float16', data_type=TensorProto.FLOAT16, dims=init.dims,
                           data_location=TensorProto.EXTERNAL)
        for key, value in (('location', weights.name), ('offset', str(data_start + begin)),
                           ('length', str(end - begin))):
            half.external_data.add(key=key, value=value)
        kept.append(half)
        casts.append(helper.make_node('Cast', [half.name], [init.name], name=f'{init.name}__to_float32',
                                      to=TensorProto.FLOAT))
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept)
    nodes = casts + list(graph.graph.node)  # casts first: the graph stays topologically sorted
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    return len(casts)


def ship(checkpoint: Path, calibration_data: str | None = None, int8: bool = True) -> Path:
    """
    Write the deployable form of ``checkpoint`` as ``<stem>.{onnx,json,source.json}`` (+ ``.int8.onnx``) beside it.

    The INT8 model is calibrated on the validation crops of ``calibration_data`` (None: the checkpoint's dataset);
    without that dataset, or with ``int8`` False, the model ships float only and a stale INT8 file is removed.
    """
    stem = checkpoint_stem(checkpoint)
    weights = stem.with_suffix('.safetensors')
    int8_path = stem.with_name(f'{stem.name}.int8.onnx')
    loaded = load_model(stem)
    calibration = calibration_for(loaded, calibration_data) if int8 else None
    with tempfile.TemporaryDirectory() as tmp:  # the export gives the contract (class table, hashes, parity)
        contract_path = export_model(loaded, Path(tmp), calibration=calibration)
        exported = load_contract(contract_path)
        if exported.int8_model_file:
            # INT8 weights are their own bytes (int8 and float32 tensors), so this file carries its weights.
            int8_path.write_bytes(contract_path.with_name(exported.int8_model_file).read_bytes())
        else:
            int8_path.unlink(missing_ok=True)
    graph = unfolded_graph(loaded.model.eval(), exported)
    replaced = reference_checkpoint_weights(graph, weights)
    onnx_path = write_atomic(stem.with_suffix('.onnx'), graph.SerializeToString())
    onnx.checker.check_model(str(onnx_path), full_check=True)  # also resolves the external data
    image, embedding = parity_inputs(exported, PARITY_BATCH, seed=0)
    with torch.inference_mode():
        reference = loaded.model(torch.from_numpy(image), torch.from_numpy(embedding)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    (points,) = session.run([OUTPUT_POINTS], {INPUT_IMAGE: image, INPUT_CLASS_EMBEDDING: embedding})
    error = float(np.abs(points - reference).max())
    if not error <= FP32_TOLERANCE:
        onnx_path.unlink()
        raise RuntimeError(f'{stem}: the shipped ONNX differs from torch by {error:.3g} (max abs), tolerance '
                           f'{FP32_TOLERANCE:g}; removed it')
    int8_fields = {'int8_model_file': int8_path.name, 'int8_model_sha256': file_sha256(int8_path)} \
        if exported.int8_model_file else {}
    contract = dataclasses.replace(
        exported, model_file=onnx_path.name, model_sha256=file_sha256(onnx_path), fp16_model_file='',
        fp16_model_sha256='', **int8_fields,
        parity={**exported.parity, 'shipped_max_abs': error,
                'shipped_method': f'onnxruntime CPU on {onnx_path.name} (weights read from {weights.name}) vs '
                                  f'torch float32 eager'})
    contract_path = contract.save(stem.with_suffix('.json'))
    write_atomic(stem.with_name(f'{stem.name}.source.json'), json.dumps(source_record(stem), indent=1).encode())
    LOGGER.info('shipped %s: %s (graph %.2f MB, %d weight tensors read from %s), max abs error vs torch %.2e; %s',
                stem, contract_path, onnx_path.stat().st_size / 1e6, replaced, weights.name, error,
                f'INT8 {int8_path.name} {int8_path.stat().st_size / 1e6:.1f} MB' if int8_fields else 'no INT8')
    return contract_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d ship', description=__doc__.strip().splitlines()[0])
    parser.add_argument('checkpoint', type=Path, help='shipped checkpoint (stem, .yaml or .safetensors)')
    parser.add_argument('--calibration-data', metavar='DIR',
                        help="dataset whose validation crops calibrate the INT8 model (default: the checkpoint's)")
    parser.add_argument('--no-int8', action='store_true', help='ship the float model only')
    args = parser.parse_args(argv)
    for chatty in ('onnxscript', 'onnx_ir'):    # one INFO line per folded constant otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    ship(args.checkpoint, args.calibration_data, int8=not args.no_int8)
    return 0
