"""
What every inference backend is: the :class:`Backend` interface and the input checks and batching they share.

ONNX Runtime (``inference.py``) and TensorRT (``tensorrt_backend.py``) both build on this module, and
``inference.create_backend`` picks between them; nothing here imports either, so the three never import each other
in a circle. Never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from mesc3d_ros.contract import INPUT_CLASS_EMBEDDING, INPUT_IMAGE, ModelContract


class Backend(Protocol):
    """What the reconstruction pipeline needs from an inference engine."""

    name: str
    """Human-readable backend name for logs and benchmarks, e.g. ``onnxruntime[CPUExecutionProvider,int8]``."""
    max_batch: int
    """Largest batch sent to the engine in one call; :meth:`run` splits bigger batches."""

    def run(self, image: np.ndarray, class_embedding: np.ndarray) -> np.ndarray:
        """Image (B, 3, S, S) float32 in [0, 1], class_embedding (B, D) float32 -> points (B, N, 3) float32."""

    def close(self) -> None:
        """Release sessions and device memory; the backend is unusable afterwards."""


def validate_inputs(contract: ModelContract, image: np.ndarray,
                    class_embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float32 copies (or views) of the two inputs after checking their shapes against the contract."""
    size, dim = contract.image_size, contract.embedding_dim
    if image.ndim != 4 or image.shape[1:] != (3, size, size):
        raise ValueError(f'"{INPUT_IMAGE}" must be (B, 3, {size}, {size}), got {image.shape}')
    if class_embedding.ndim != 2 or class_embedding.shape[1] != dim:
        raise ValueError(f'"{INPUT_CLASS_EMBEDDING}" must be (B, {dim}), got {class_embedding.shape}')
    if image.shape[0] != class_embedding.shape[0]:
        raise ValueError(f'batch sizes differ: {image.shape[0]} images, {class_embedding.shape[0]} embeddings')
    return (np.ascontiguousarray(image, dtype=np.float32),
            np.ascontiguousarray(class_embedding, dtype=np.float32))


def run_in_chunks(run_batch: Callable[[np.ndarray, np.ndarray], np.ndarray], image: np.ndarray,
                  class_embedding: np.ndarray, max_batch: int, num_points: int) -> np.ndarray:
    """Call ``run_batch`` on slices of at most ``max_batch`` items and concatenate: (B, N, 3) float32."""
    batch = image.shape[0]
    if batch == 0:
        return np.zeros((0, num_points, 3), dtype=np.float32)
    if batch <= max_batch:
        return run_batch(image, class_embedding)
    return np.concatenate([run_batch(image[start:start + max_batch], class_embedding[start:start + max_batch])
                           for start in range(0, batch, max_batch)], axis=0)
