"""
The model I/O contract: what an exported MESC-3D model takes and returns, as code.

Export writes ``<name>.onnx`` (float32), ``<name>.fp16.onnx``, optionally ``<name>.int8.onnx`` and ``<name>.json``;
the JSON is a :class:`ModelContract` and lists which of those precisions (:data:`PRECISIONS`) the model offers.
Engine build and the node read the JSON, check it against the model file and refuse to start on any mismatch, naming
the file and the field.

Tensors (all float32, batch dimension ``batch`` dynamic; :data:`TENSOR_DTYPE`):

- ``image``           (B, 3, H, W)  RGB in [0, 1], H = W = ``image_size``; normalisation happens inside the graph.
- ``class_embedding`` (B, D)        one row of ``class_embeddings`` per object, D = ``embedding_dim``.
- ``points``          (B, N, 3)     unit-ball shape in ``output_frame`` (``viewer``: the crop's virtual camera,
                                     OpenCV optical axes x right, y down, z forward; ``canonical``: object frame).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

INPUT_IMAGE = 'image'
INPUT_CLASS_EMBEDDING = 'class_embedding'
OUTPUT_POINTS = 'points'
BATCH_AXIS = 'batch'
"""Name of the one dynamic dimension; ONNX dynamic axes and TensorRT profiles are derived from it."""
TENSOR_DTYPE = 'float32'
"""numpy dtype name of every contract tensor (the fp16 model keeps float32 I/O too)."""
CONTRACT_VERSION = 1
Precision = Literal['fp32', 'fp16', 'int8']
PRECISIONS: tuple[Precision, ...] = ('fp32', 'fp16', 'int8')
"""Model files a contract can name: float32, float16 weights, static INT8 (QDQ); all with float32 I/O."""

# A model's I/O signature as a backend reports it: name -> (shape, numpy dtype name). A dynamic dimension is a
# string (ONNX dim_param), -1 (TensorRT) or None (unknown).
Signature = dict[str, tuple[tuple[int | str | None, ...], str]]


class ContractError(ValueError):
    """A contract or model file is missing, corrupt or does not match; the message names the file and field."""


@dataclass(frozen=True)
class ClassEntry:
    name: str
    """Model class name (the text the 3DSPL prior was computed from)."""
    embedding: tuple[float, ...]
    """Class embedding fed to ``class_embedding`` (length ``embedding_dim``)."""
    size_m: float
    """Typical metric diameter (bounding-sphere diameter, metres) of the class: the no-depth placement prior."""


@dataclass(frozen=True)
class ModelContract:
    name: str
    model_file: str
    """ONNX file name, relative to the contract JSON."""
    model_sha256: str
    """sha256 of the ONNX file bytes; a tampered or re-exported file is refused."""
    image_size: int
    embedding_dim: int
    num_points: int
    output_frame: Literal['viewer', 'canonical']
    crop_padding: float
    """Relative padding added around a detection box before squaring (the training crop policy)."""
    classes: tuple[ClassEntry, ...]
    generic_class: ClassEntry
    """Embedding used for class names outside the table (zero-shot fallback)."""
    config: dict
    """The full resolved training config (``mesc3d_ros.config.config_to_dict``)."""
    config_hash: str
    opset: int
    metrics: dict = field(default_factory=dict)
    """Validation/test metrics of the exported checkpoint (CD-L1, F-score, …)."""
    data_manifest_hash: str = ''
    """Identifies the dataset the checkpoint was trained on (the data engineer's manifest hash)."""
    parity: dict = field(default_factory=dict)
    """Export-time error against torch: ``fp32_max_abs``, ``fp16_max_abs`` and how the fp16 number was obtained."""
    fp16_model_file: str = ''
    """float16-weight ONNX (float32 I/O) for strongly typed TensorRT builds; empty when export made none."""
    fp16_model_sha256: str = ''
    int8_model_file: str = ''
    """Static INT8 QDQ ONNX (float32 I/O) for ONNX Runtime on CPUs; empty when export had no calibration data."""
    int8_model_sha256: str = ''
    quantization: dict = field(default_factory=dict)
    """How the INT8 model was made: method, ops and blocks kept in float, the calibration crops (split, data
    manifest hash, every ``category/object/view``) and its CD-L1 against float32 on them."""
    version: int = CONTRACT_VERSION
    units: str = 'unit_ball'
    """Output units before placement: the shape fits the unit ball (radius 1)."""

    # ---- derived views ---------------------------------------------------------------------------------------
    @property
    def precisions(self) -> tuple[Precision, ...]:
        """Return the precisions this export has a model file for, float32 first."""
        return tuple(p for p in PRECISIONS if getattr(self, model_fields(p)[0]))

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.classes)

    def embedding_table(self) -> np.ndarray:
        """(C, D) float32 class embeddings in table order."""
        return np.asarray([entry.embedding for entry in self.classes], dtype=np.float32).reshape(
            len(self.classes), self.embedding_dim)

    def input_shapes(self) -> dict[str, tuple[str | int, ...]]:
        return {
            INPUT_IMAGE: (BATCH_AXIS, 3, self.image_size, self.image_size),
            INPUT_CLASS_EMBEDDING: (BATCH_AXIS, self.embedding_dim),
        }

    def output_shapes(self) -> dict[str, tuple[str | int, ...]]:
        return {OUTPUT_POINTS: (BATCH_AXIS, self.num_points, 3)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """{tensor: {axis: name}} for every named (dynamic) dimension, derived from the shapes above."""
        shapes = {**self.input_shapes(), **self.output_shapes()}
        return {tensor: {axis: dim for axis, dim in enumerate(shape) if isinstance(dim, str)}
                for tensor, shape in shapes.items()}

    # ---- (de)serialisation -----------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def save(self, path: str | Path) -> Path:
        return write_atomic(Path(path), self.to_json().encode())

    def model_path(self, contract_path: str | Path, precision: Precision = 'fp32') -> Path:
        """Return the ONNX file of ``precision`` next to the contract (ContractError if the export made none)."""
        if precision not in PRECISIONS:
            raise ContractError(f'{contract_path}: unknown precision {precision!r}; one of {", ".join(PRECISIONS)}')
        if precision not in self.precisions:
            raise ContractError(f'{contract_path}: field "{precision}_model_file" is empty: export made no '
                                f'{precision} model; this one offers {", ".join(self.precisions)}')
        return Path(contract_path).resolve().parent / getattr(self, model_fields(precision)[0])


def model_fields(precision: Precision) -> tuple[str, str]:
    """Names of the contract fields holding the model file and its sha256 for ``precision``."""
    prefix = '' if precision == 'fp32' else f'{precision}_'
    return f'{prefix}model_file', f'{prefix}model_sha256'


def _optional(data: dict, key: str, kind: type, default: object, where: str) -> object:
    """
    Return an optional field, ``default`` when absent, else checked like a required one.

    Contracts written before the field existed lack it.
    """
    return _require(data, key, kind, where) if key in data else default


def _require(data: dict, key: str, kind: type | tuple[type, ...], where: str) -> object:
    if key not in data:
        raise ContractError(f'{where}: missing field "{key}"')
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ContractError(f'{where}: field "{key}" has the wrong type ({type(value).__name__})')
    return value


def class_entry_to_dict(entry: ClassEntry) -> dict:
    """JSON/YAML-safe mapping of a class entry (the form :func:`parse_class_entry` reads)."""
    return {'name': entry.name, 'embedding': list(entry.embedding), 'size_m': entry.size_m}


def parse_class_entry(data: object, dim: int, where: str) -> ClassEntry:
    """Validate a ``{name, embedding, size_m}`` mapping; ContractError names ``where`` and the field."""
    if not isinstance(data, dict):
        raise ContractError(f'{where}: expected an object')
    name = _require(data, 'name', str, where)
    embedding = _require(data, 'embedding', list, where)
    size_m = float(_require(data, 'size_m', (int, float), where))
    if len(embedding) != dim:
        raise ContractError(f'{where}: field "embedding" has {len(embedding)} values, embedding_dim is {dim}')
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in embedding):
        raise ContractError(f'{where}: field "embedding" holds non-finite or non-numeric values')
    if not (math.isfinite(size_m) and size_m > 0):
        raise ContractError(f'{where}: field "size_m" must be a positive number, got {size_m}')
    return ClassEntry(name=name, embedding=tuple(float(v) for v in embedding), size_m=size_m)


def load_contract(path: str | Path) -> ModelContract:
    """Read and validate a contract JSON; every problem is a :class:`ContractError` naming file and field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ContractError(f'{path}: cannot read model contract: {exc}') from exc
    except json.JSONDecodeError as exc:
        raise ContractError(f'{path}: not valid JSON (corrupt or truncated?): {exc}') from exc
    where = str(path)
    if not isinstance(data, dict):
        raise ContractError(f'{where}: expected a JSON object')
    version = _require(data, 'version', int, where)
    if version != CONTRACT_VERSION:
        raise ContractError(f'{where}: field "version" is {version}, this runtime reads {CONTRACT_VERSION}')
    dim = _require(data, 'embedding_dim', int, where)
    classes_raw = _require(data, 'classes', list, where)
    if not classes_raw:
        raise ContractError(f'{where}: field "classes" is empty: the model needs a class table')
    classes = tuple(parse_class_entry(entry, dim, f'{where}: classes[{i}]') for i, entry in enumerate(classes_raw))
    names = [entry.name for entry in classes]
    if len(set(names)) != len(names):
        raise ContractError(f'{where}: field "classes" repeats a class name')
    contract = ModelContract(
        name=_require(data, 'name', str, where),
        model_file=_require(data, 'model_file', str, where),
        model_sha256=_require(data, 'model_sha256', str, where),
        image_size=_require(data, 'image_size', int, where),
        embedding_dim=dim,
        num_points=_require(data, 'num_points', int, where),
        output_frame=_require(data, 'output_frame', str, where),
        crop_padding=float(_require(data, 'crop_padding', (int, float), where)),
        classes=classes,
        generic_class=parse_class_entry(_require(data, 'generic_class', dict, where), dim,
                                        f'{where}: generic_class'),
        config=_require(data, 'config', dict, where),
        config_hash=_require(data, 'config_hash', str, where),
        opset=_require(data, 'opset', int, where),
        metrics=_require(data, 'metrics', dict, where),
        data_manifest_hash=_require(data, 'data_manifest_hash', str, where),
        parity=_require(data, 'parity', dict, where),
        fp16_model_file=_require(data, 'fp16_model_file', str, where),
        fp16_model_sha256=_require(data, 'fp16_model_sha256', str, where),
        int8_model_file=_optional(data, 'int8_model_file', str, '', where),
        int8_model_sha256=_optional(data, 'int8_model_sha256', str, '', where),
        quantization=_optional(data, 'quantization', dict, {}, where),
        version=version,
        units=_require(data, 'units', str, where),
    )
    if contract.output_frame not in ('viewer', 'canonical'):
        raise ContractError(f'{where}: field "output_frame" must be "viewer" or "canonical", '
                            f'got {contract.output_frame!r}')
    for key in ('image_size', 'num_points', 'embedding_dim'):
        if getattr(contract, key) <= 0:
            raise ContractError(f'{where}: field "{key}" must be positive')
    return contract


def write_atomic(path: Path, data: bytes) -> Path:
    """Write to a temporary sibling and rename: readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_file(contract: ModelContract, contract_path: str | Path, precision: Precision = 'fp32') -> Path:
    """Check that the ``precision`` model file next to the contract exists and is byte-identical to the exported one."""
    file_field, sha_field = model_fields(precision)
    model_path = contract.model_path(contract_path, precision)
    if not model_path.is_file():
        raise ContractError(f'{contract_path}: field "{file_field}" points at {model_path}, which does not exist')
    actual = file_sha256(model_path)
    expected = getattr(contract, sha_field)
    if actual != expected:
        raise ContractError(f'{model_path}: sha256 {actual[:12]}… does not match field "{sha_field}" '
                            f'{expected[:12]}… of {contract_path} (file changed, truncated or tampered)')
    return model_path


def check_signature(contract: ModelContract, model_path: str | Path, inputs: Signature, outputs: Signature) -> None:
    """
    Compare a loaded model's I/O (as its backend reports it) with the contract; ContractError on any mismatch.

    Dynamic dimensions must be dynamic in the model too (a model exported for a fixed batch is refused), and every
    static dimension must equal the contract's, named by the contract field it comes from.
    """
    for kind, actual, expected in (('input', inputs, contract.input_shapes()),
                                   ('output', outputs, contract.output_shapes())):
        if set(actual) != set(expected):
            raise ContractError(f"{model_path}: model {kind}s {sorted(actual)} do not match the contract's "
                                f'{sorted(expected)} (tensor names are fixed by mesc3d_ros.contract)')
        for name, expected_shape in expected.items():
            shape, dtype = actual[name]
            if dtype != TENSOR_DTYPE:
                raise ContractError(f'{model_path}: {kind} "{name}" has dtype {dtype}, the contract needs '
                                    f'{TENSOR_DTYPE}')
            if len(shape) != len(expected_shape):
                raise ContractError(f'{model_path}: {kind} "{name}" has rank {len(shape)} {tuple(shape)}, '
                                    f'the contract needs {expected_shape}')
            for axis, (got, want) in enumerate(zip(shape, expected_shape)):
                if isinstance(want, str):
                    if isinstance(got, int) and got >= 0:
                        raise ContractError(f'{model_path}: {kind} "{name}" axis {axis} is fixed at {got}, the '
                                            f'contract needs the dynamic "{want}" axis')
                elif got != want:
                    raise ContractError(f'{model_path}: {kind} "{name}" axis {axis} is {got}, but contract field '
                                        f'"{_shape_field(name, axis)}" says {want}')


def _shape_field(tensor: str, axis: int) -> str:
    """Return the contract field that fixes a static dimension, for error messages."""
    if tensor == INPUT_IMAGE:
        return 'image_size' if axis >= 2 else 'channels (always 3)'
    if tensor == INPUT_CLASS_EMBEDDING:
        return 'embedding_dim'
    return 'num_points' if axis == 1 else 'xyz (always 3)'
