"""
``mesc3d export CHECKPOINT [--out-dir engines] [--opset 18] [--extra-classes a,b:0.3]``: ONNX + model contract.

Writes, for a checkpoint whose config is named ``<name>``:

- ``<name>.onnx``       float32 graph, dynamic ``batch`` axis (names from ``mesc3d_ros.contract``), standard ops only,
                         everything input-independent (sphere tokens, normalisation constants) folded to initializers;
- ``<name>.fp16.onnx``  the same with float16 weights and float32 I/O, for strongly typed TensorRT (11+) FP16 builds;
- ``<name>.int8.onnx``  static INT8 (QDQ) for ONNX Runtime on CPUs, calibrated on the validation split's crops
                         (``quantize.py``); only when that dataset is on this machine (``--calibration-data``);
- ``<name>.json``       the :class:`~mesc3d_ros.contract.ModelContract` the node and engine build read;
- ``<name>.yaml``       the resolved training config.

The exporter is torch's ``torch.export``-based one (``dynamo=True``, the maintained path); its ONNX optimiser folds
constants. It implements opset 18 and newer (asking it for 17 silently yields 18), so the minimum here is 18, which
every TensorRT 10 ONNX parser reads. Before anything is written under the final names, the graph is checked (ONNX
checker, default domain only, no input-independent node left) and run with ONNX Runtime against torch: a float32
error above :data:`FP32_TOLERANCE` fails the export. The float16 model's error is measured the same way and
recorded in the contract's ``parity`` field. The INT8 model's CD-L1 against float32 on its calibration crops goes to
the contract's ``quantization`` field with the list of those crops.

``--extra-classes`` embeds more class names with the checkpoint's trained 3DSPL text prior (``text_prior.py``, the
same prompts that made the class table), so the node can use them zero-shot; ``name:0.3`` sets the metric size
prior in metres, otherwise the generic class's is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript.optimizer
import torch
import yaml
from onnxruntime.transformers.float16 import convert_float_to_float16

from mesc3d_ros.config import config_hash, config_to_dict
from mesc3d_ros.contract import (INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, ClassEntry, ModelContract,
                                 file_sha256, write_atomic)
from mesc3d_training.checkpoint import LoadedModel, load_model
from mesc3d_training.quantize import (CalibrationSet, calibration_available, cd_l1, load_calibration_set,
                                      quantize_int8, run_model)

LOGGER = logging.getLogger(__name__)

MIN_OPSET = 18
"""Lowest opset torch's exporter implements; TensorRT 10.x parses opsets 9 … 20+."""
FP32_TOLERANCE = 1e-4
"""Max abs error (unit-ball coordinates) allowed between ONNX Runtime and torch eager in float32."""
FOLD_SIZE_LIMIT = 1 << 26
"""Largest tensor (elements) constant folding may read or write: above the paper config's 1280 × 2048 gates."""
PARITY_BATCH = 3
"""Batch of the parity check: > 1 so that batch mixing bugs show, odd so that it differs from the trace batch."""


class ExportError(RuntimeError):
    """The exported graph is invalid, uses non-standard ops, keeps foldable subgraphs or disagrees with torch."""


def export_model(loaded: LoadedModel, out_dir: Path, opset: int = MIN_OPSET,
                 extra_classes: tuple[ClassEntry, ...] = (), calibration: CalibrationSet | None = None) -> Path:
    """
    Export ``loaded`` to ``out_dir``; returns the contract JSON path.

    ``extra_classes`` join the class table; with ``calibration`` (validation crops) the INT8 model is written too.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}: torch's ONNX exporter implements opset {MIN_OPSET}+")
    cfg, model = loaded.cfg, loaded.model.eval()
    classes = loaded.classes + extra_classes
    names = [entry.name for entry in classes]
    if len(set(names)) != len(names):
        raise ValueError(f'duplicate class names in the table: {sorted(n for n in names if names.count(n) > 1)}')
    name = cfg.model.name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    draft = ModelContract(
        name=name, model_file=f'{name}.onnx', model_sha256='', image_size=cfg.model.image_size,
        embedding_dim=cfg.model.text_dim, num_points=cfg.model.num_points, output_frame=cfg.data.frame,
        crop_padding=cfg.data.crop_padding,
        classes=classes, generic_class=loaded.generic_class, config=config_to_dict(cfg),
        config_hash=config_hash(cfg), opset=opset, metrics=loaded.metrics,
        data_manifest_hash=loaded.data_manifest_hash)

    fp32 = _to_onnx(model, draft, opset)
    check_graph(fp32, name)
    image, embedding = parity_inputs(draft, PARITY_BATCH, seed=0)
    with torch.inference_mode():
        reference = model(torch.from_numpy(image), torch.from_numpy(embedding)).numpy()
    fp32_error = _max_abs_error(fp32, image, embedding, reference)
    if not fp32_error <= FP32_TOLERANCE:
        raise ExportError(f'{name}: ONNX Runtime differs from torch by {fp32_error:.3g} (max abs, float32), '
                          f'tolerance {FP32_TOLERANCE:g}; nothing was written')
    fp16 = convert_float_to_float16(fp32, keep_io_types=True)
    fp16_error = _max_abs_error(fp16, image, embedding, reference)
    LOGGER.info('%s: parity vs torch, max abs error: float32 %.2e, float16 weights %.2e', name, fp32_error,
                fp16_error)

    onnx_path = write_atomic(out_dir / draft.model_file, fp32.SerializeToString())
    fp16_path = write_atomic(out_dir / f'{name}.fp16.onnx', fp16.SerializeToString())
    write_atomic(out_dir / f'{name}.yaml', yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
    int8 = _write_int8(onnx_path, out_dir / f'{name}.int8.onnx', calibration) if calibration is not None else {}
    contract = dataclasses.replace(
        draft, model_sha256=file_sha256(onnx_path), fp16_model_file=fp16_path.name,
        fp16_model_sha256=file_sha256(fp16_path), **int8,
        parity={'fp32_max_abs': fp32_error, 'fp16_max_abs': fp16_error, 'batch': PARITY_BATCH,
                'fp16_method': 'onnxruntime CPU on the float16-weight ONNX (onnxruntime.transformers.float16, '
                               'float32 I/O) vs torch float32 eager'})
    contract_path = contract.save(out_dir / f'{name}.json')
    LOGGER.info('exported %s (%d classes, opset %d) to %s', name, len(classes), opset, contract_path)
    return contract_path


def _write_int8(fp32_path: Path, out_path: Path, calibration: CalibrationSet) -> dict:
    """Quantise, score INT8 against float32 on the calibration crops; the contract fields of the INT8 model."""
    tmp = out_path.with_name(f'.{out_path.name}.tmp')
    try:
        record = quantize_int8(fp32_path, tmp, calibration)
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    scores = {precision: cd_l1(run_model(path, calibration.image, calibration.embedding), calibration.points)
              for precision, path in (('fp32', fp32_path), ('int8', out_path))}
    change = 100.0 * (scores['int8'] / scores['fp32'] - 1.0)
    LOGGER.info('%s: INT8 on %d %s crops: CD-L1 %.4f vs float32 %.4f (%+.1f %%)', out_path.name,
                len(calibration.items), calibration.split, scores['int8'], scores['fp32'], change)
    return {'int8_model_file': out_path.name, 'int8_model_sha256': file_sha256(out_path),
            'quantization': {**record, 'calibration_cd_l1': scores, 'calibration_cd_l1_change_pct': change}}


def embed_extra_classes(loaded: LoadedModel, names: tuple[str, ...],
                        sizes_m: tuple[float | None, ...]) -> tuple[ClassEntry, ...]:
    """Class entries for ``names`` from the checkpoint's trained text prior; size None: the generic class's."""
    from mesc3d_training.model.text_prior import TextPrior

    if not loaded.prompts:
        raise ExportError('extra classes need the trained 3DSPL prompts, and this checkpoint has none '
                          '(save it with save_model(..., prompts=text_prior.prompts.state_dict()))')
    prior = TextPrior(loaded.cfg.model)
    try:
        prior.prompts.load_state_dict(loaded.prompts)
    except RuntimeError as exc:
        raise ExportError(f"the checkpoint's prompts do not fit the text prior of its config: {exc}") from exc
    table = prior.class_table(list(names)).numpy()                                    # (C, D) unit-norm
    return tuple(ClassEntry(name=name, embedding=tuple(float(v) for v in row),
                            size_m=loaded.generic_class.size_m if size is None else size)
                 for name, row, size in zip(names, table, sizes_m))


def parse_extra_classes(text: str) -> tuple[tuple[str, ...], tuple[float | None, ...]]:
    """``"kettle:0.25,stapler"`` -> (("kettle", "stapler"), (0.25, None))."""
    names, sizes = [], []
    for item in filter(None, (part.strip() for part in text.split(','))):
        name, _, size = item.partition(':')
        try:
            value = float(size) if size else None
        except ValueError as exc:
            raise ValueError(f'--extra-classes: size of "{name}" must be metres, got {size!r}') from exc
        if value is not None and not value > 0:
            raise ValueError(f'--extra-classes: size of "{name}" must be positive, got {value}')
        names.append(name.strip())
        sizes.append(value)
    return tuple(names), tuple(sizes)


def parity_inputs(contract: ModelContract, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded inputs: uniform images in [0, 1] and class-table embeddings (cycled), as the node would feed."""
    rng = np.random.default_rng(seed)
    size = contract.image_size
    image = rng.random((batch, 3, size, size), dtype=np.float32)                       # (B, 3, S, S) in [0, 1]
    embedding = contract.embedding_table()[np.arange(batch) % len(contract.classes)]  # (B, D)
    return image, np.ascontiguousarray(embedding)


def check_graph(model: onnx.ModelProto, name: str) -> None:
    """ONNX checker, standard-domain ops only, and no node whose inputs are all constants (unfolded subgraph)."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f'{name}: the ONNX checker rejects the graph: {exc}') from exc
    custom = sorted({f'{node.domain}::{node.op_type}' for node in model.graph.node
                     if node.domain not in ('', 'ai.onnx')})
    if custom:
        raise ExportError(f'{name}: custom-domain ops in the graph (TensorRT would need plugins): {custom}')
    constant = {init.name for init in model.graph.initializer}
    foldable = []
    for node in model.graph.node:       # graph nodes are topologically sorted
        if node.op_type == 'Constant' or all(not tensor or tensor in constant for tensor in node.input):
            constant.update(node.output)
            if node.op_type != 'Constant':
                foldable.append(f'{node.op_type} {node.name}')
    if foldable:
        raise ExportError(f'{name}: input-independent nodes left in the graph (should be initializers): '
                          f'{foldable[:10]}')


def trace_to_onnx(model: torch.nn.Module, contract: ModelContract, opset: int,
                  optimize: bool) -> torch.onnx.ONNXProgram:
    """
    Trace the model with torch.export, with the contract's inputs, outputs and dynamic axes.

    ``optimize``: the exporter's own constant folding, which ``mesc3d ship`` leaves off to keep every trained tensor an
    initializer.
    """
    example = [torch.from_numpy(array) for array in parity_inputs(contract, 2, seed=1)]
    # Batch 2 at trace time: torch.export specialises a dimension traced at size 1.
    axes = contract.dynamic_axes()
    dims = {name: torch.export.Dim(name, min=1) for tensor_axes in axes.values() for name in tensor_axes.values()}
    dynamic_shapes = {tensor: {axis: dims[name] for axis, name in axes[tensor].items()}
                      for tensor in (INPUT_IMAGE, INPUT_CLASS_EMBEDDING)}
    with warnings.catch_warnings():
        # torch renames the axis to the name it already has and warns that the name "will not be used".
        warnings.filterwarnings('ignore', message='# The axis name')
        return torch.onnx.export(model, tuple(example), input_names=[INPUT_IMAGE, INPUT_CLASS_EMBEDDING],
                                 output_names=[OUTPUT_POINTS], opset_version=opset, dynamo=True,
                                 dynamic_shapes=dynamic_shapes, optimize=optimize, external_data=False,
                                 verbose=False)


def _to_onnx(model: torch.nn.Module, contract: ModelContract, opset: int) -> onnx.ModelProto:
    program = trace_to_onnx(model, contract, opset, optimize=True)
    # The exporter's pass skips constants above 512² elements; the small config's factorised selection maps slice
    # such a weight (style conv weight[:, :, 0]), so fold again with a limit above any tensor of this model.
    onnxscript.optimizer.optimize(program.model, input_size_limit=FOLD_SIZE_LIMIT,
                                  output_size_limit=FOLD_SIZE_LIMIT)
    proto = program.model_proto
    actual = next(entry.version for entry in proto.opset_import if entry.domain in ('', 'ai.onnx'))
    if actual != opset:
        raise ExportError(f'{contract.name}: asked for opset {opset}, the exporter produced {actual}')
    return proto


def _max_abs_error(model: onnx.ModelProto, image: np.ndarray, embedding: np.ndarray,
                   reference: np.ndarray) -> float:
    options = ort.SessionOptions()
    options.log_severity_level = 3      # the float16 model logs one warning per inserted Cast otherwise
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                   providers=['CPUExecutionProvider'])
    (points,) = session.run([OUTPUT_POINTS], {INPUT_IMAGE: image, INPUT_CLASS_EMBEDDING: embedding})
    return float(np.abs(points.astype(np.float32) - reference).max())


def calibration_for(loaded: LoadedModel, data_root: str | None) -> CalibrationSet | None:
    """
    Return the validation crops of ``data_root``, or None (logged) when absent.

    ``data_root`` None means the checkpoint's dataset.
    """
    cfg = loaded.cfg if data_root is None else dataclasses.replace(
        loaded.cfg, data=dataclasses.replace(loaded.cfg.data, root=data_root))
    if not calibration_available(cfg):
        LOGGER.warning('no INT8 model: dataset %s (its validation crops calibrate it) is not on this machine; '
                       'pass --calibration-data', cfg.data.root)
        return None
    return load_calibration_set(cfg, loaded.classes, loaded.generic_class)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d export', description=__doc__.strip().splitlines()[0])
    parser.add_argument('checkpoint', type=Path, help='deployable checkpoint (stem, .yaml or .safetensors)')
    parser.add_argument('--out-dir', type=Path, default=Path('engines'))
    parser.add_argument('--opset', type=int, default=MIN_OPSET)
    parser.add_argument('--extra-classes', default='', help='comma-separated class names (optionally name:size_m) '
                        'to embed with the text prior for zero-shot use')
    parser.add_argument('--calibration-data', help='dataset whose validation crops calibrate the INT8 model '
                        "(default: the checkpoint's data.root; without it no INT8 model is written)")
    parser.add_argument('--no-int8', action='store_true', help='write the float models only')
    args = parser.parse_args(argv)
    for chatty in ('onnxscript', 'onnx_ir'):    # one INFO line per folded constant otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    names, sizes = parse_extra_classes(args.extra_classes)
    loaded = load_model(args.checkpoint)
    extra = embed_extra_classes(loaded, names, sizes) if names else ()
    export_model(loaded, args.out_dir, opset=args.opset, extra_classes=extra,
                 calibration=None if args.no_int8 else calibration_for(loaded, args.calibration_data))
    return 0
