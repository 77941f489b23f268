"""The model I/O contract: what an exported MESC-3D model takes and returns, as code.

Export writes ``<name>.onnx`` and ``<name>.json``; the JSON is a :class:`ModelContract`. Engine build and the node
read the JSON, check it against the model file and refuse to start on any mismatch, naming the file and the field.

Tensors (all float32, batch dimension dynamic):

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

INPUT_IMAGE = 'image'
INPUT_CLASS_EMBEDDING = 'class_embedding'
OUTPUT_POINTS = 'points'
CONTRACT_VERSION = 1


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
    version: int = CONTRACT_VERSION
    units: str = 'unit_ball'
    """Output units before placement: the shape fits the unit ball (radius 1)."""

    # ---- derived views ---------------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.classes)

    def embedding_table(self) -> np.ndarray:
        """(C, D) float32 class embeddings in table order."""
        return np.asarray([entry.embedding for entry in self.classes], dtype=np.float32).reshape(
            len(self.classes), self.embedding_dim)

    def input_shapes(self) -> dict[str, tuple[str | int, ...]]:
        return {
            INPUT_IMAGE: ('batch', 3, self.image_size, self.image_size),
            INPUT_CLASS_EMBEDDING: ('batch', self.embedding_dim),
        }

    def output_shapes(self) -> dict[str, tuple[str | int, ...]]:
        return {OUTPUT_POINTS: ('batch', self.num_points, 3)}

    # ---- (de)serialisation -----------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + '.tmp')
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    def model_path(self, contract_path: str | Path) -> Path:
        return Path(contract_path).resolve().parent / self.model_file


def _require(data: dict, key: str, kind: type | tuple[type, ...], where: str) -> object:
    if key not in data:
        raise ContractError(f'{where}: missing field "{key}"')
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ContractError(f'{where}: field "{key}" has the wrong type ({type(value).__name__})')
    return value


def _class_entry(data: object, dim: int, where: str) -> ClassEntry:
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
    classes = tuple(_class_entry(entry, dim, f'{where}: classes[{i}]') for i, entry in enumerate(classes_raw))
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
        generic_class=_class_entry(_require(data, 'generic_class', dict, where), dim, f'{where}: generic_class'),
        config=_require(data, 'config', dict, where),
        config_hash=_require(data, 'config_hash', str, where),
        opset=_require(data, 'opset', int, where),
        metrics=_require(data, 'metrics', dict, where),
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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_file(contract: ModelContract, contract_path: str | Path) -> Path:
    """Check that the model file next to the contract exists and is byte-identical to the exported one."""
    model_path = contract.model_path(contract_path)
    if not model_path.is_file():
        raise ContractError(f'{contract_path}: field "model_file" points at {model_path}, which does not exist')
    actual = file_sha256(model_path)
    if actual != contract.model_sha256:
        raise ContractError(f'{model_path}: sha256 {actual[:12]}… does not match field "model_sha256" '
                            f'{contract.model_sha256[:12]}… of {contract_path} (file changed, truncated or tampered)')
    return model_path
