"""
An oracle model for placement tests.

A real ONNX graph (run by the real ONNX Runtime backend) that always predicts a unit sphere, stretched along y by the
first value of the class embedding.

A random-weight network predicts meaningless shapes, which is enough for proof-of-life tests; to check where the
*points* land (not only the centre) the shape must be known. The y stretch makes each object's shape depend on its
own class embedding, so batching and the class table can be checked too. The graph has the contract's real tensor
names, dtypes and dynamic batch axis; only the weights are replaced by geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mesc3d_ros.config import Config, ModelConfig, config_hash, config_to_dict
from mesc3d_ros.contract import (BATCH_AXIS, INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, ClassEntry,
                                 ModelContract, file_sha256)

OPSET = 17


def unit_sphere(num_points: int) -> np.ndarray:
    """(num_points, 3) float32 points spread evenly on the unit sphere (a Fibonacci lattice: centroid ≈ 0)."""
    index = np.arange(num_points) + 0.5
    z = 1.0 - 2.0 * index / num_points
    azimuth = np.pi * (1.0 + 5.0 ** 0.5) * index
    ring = np.sqrt(1.0 - z * z)
    return np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1).astype(np.float32)


def class_entry(name: str, y_stretch: float, size_m: float, dim: int) -> ClassEntry:
    """Return a class whose embedding makes the oracle stretch the sphere by ``y_stretch`` along y."""
    return ClassEntry(name=name, embedding=(y_stretch,) + (0.0,) * (dim - 1), size_m=size_m)


def make_sphere_model(out_dir: Path, classes: tuple[ClassEntry, ...], generic: ClassEntry, image_size: int = 32,
                      num_points: int = 512, output_frame: str = 'viewer', crop_padding: float = 0.1) -> Path:
    """Write ``sphere.onnx`` and its contract ``sphere.json`` into ``out_dir``; return the contract path."""
    dim = len(generic.embedding)
    sphere = numpy_helper.from_array(unit_sphere(num_points)[None], 'sphere')  # (1, N, 3)
    nodes = [
        # first embedding value per object: (B, 1)
        helper.make_node('Slice', [INPUT_CLASS_EMBEDDING, 'zero', 'one', 'one'], ['stretch']),
        helper.make_node('Mul', ['stretch', 'zero_f'], ['zeros']),
        helper.make_node('Add', ['zeros', 'one_f'], ['ones']),
        helper.make_node('Concat', ['ones', 'stretch', 'ones'], ['scale2d'], axis=1),  # (B, 3)
        helper.make_node('Unsqueeze', ['scale2d', 'one'], ['scale']),  # (B, 1, 3)
        helper.make_node('Mul', ['sphere', 'scale'], [OUTPUT_POINTS]),  # (B, N, 3); the image is not read
    ]
    graph = helper.make_graph(
        nodes, 'sphere_oracle',
        inputs=[helper.make_tensor_value_info(INPUT_IMAGE, TensorProto.FLOAT, [BATCH_AXIS, 3, image_size, image_size]),
                helper.make_tensor_value_info(INPUT_CLASS_EMBEDDING, TensorProto.FLOAT, [BATCH_AXIS, dim])],
        outputs=[helper.make_tensor_value_info(OUTPUT_POINTS, TensorProto.FLOAT, [BATCH_AXIS, num_points, 3])],
        initializer=[sphere, numpy_helper.from_array(np.array([0], dtype=np.int64), 'zero'),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), 'one'),
                     numpy_helper.from_array(np.array(0.0, dtype=np.float32), 'zero_f'),
                     numpy_helper.from_array(np.array(1.0, dtype=np.float32), 'one_f')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)])
    onnx.checker.check_model(model, full_check=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / 'sphere.onnx'
    onnx.save(model, model_path)
    cfg = Config(model=ModelConfig(name='sphere_oracle', image_size=image_size, num_points=num_points, text_dim=dim))
    contract = ModelContract(
        name='sphere_oracle', model_file=model_path.name, model_sha256=file_sha256(model_path),
        image_size=image_size, embedding_dim=dim, num_points=num_points, output_frame=output_frame,
        crop_padding=crop_padding, classes=classes, generic_class=generic, config=config_to_dict(cfg),
        config_hash=config_hash(cfg), opset=OPSET)
    return contract.save(out_dir / 'sphere.json')
