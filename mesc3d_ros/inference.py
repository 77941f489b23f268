"""Inference backends: one small interface, ONNX Runtime here, TensorRT in ``tensorrt_backend.py``.

Every backend takes the contract's tensors (``mesc3d_ros.contract``) and returns ``points`` (B, N, 3) float32 in
the model's output frame. :func:`create_backend` is the only constructor the node needs: it reads the contract,
checks it against the model file (sha256, tensor names, dtypes, static dimensions) and picks TensorRT when usable,
else ONNX Runtime, logging why. This module never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from mesc3d_ros.contract import (INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, ContractError, ModelContract,
                                 check_signature, load_contract, verify_model_file)

LOGGER = logging.getLogger(__name__)

BackendKind = Literal['auto', 'tensorrt', 'onnxruntime']

# ONNX Runtime reports element types as strings; the contract speaks numpy dtype names.
_ORT_DTYPES = {'tensor(float)': 'float32', 'tensor(float16)': 'float16', 'tensor(double)': 'float64',
               'tensor(int64)': 'int64', 'tensor(int32)': 'int32', 'tensor(uint8)': 'uint8'}


class Backend(Protocol):
    """What the reconstruction pipeline needs from an inference engine."""

    name: str
    """Human-readable backend name for logs and benchmarks, e.g. ``onnxruntime[CPUExecutionProvider]``."""
    max_batch: int
    """Largest batch sent to the engine in one call; :meth:`run` splits bigger batches."""

    def run(self, image: np.ndarray, class_embedding: np.ndarray) -> np.ndarray:
        """image (B, 3, S, S) float32 in [0, 1], class_embedding (B, D) float32 -> points (B, N, 3) float32."""

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


class OnnxRuntimeBackend:
    """ONNX Runtime session over the exported model: CPU everywhere, CUDA/TensorRT execution providers if present.

    Tuned for latency of small batches: full graph optimisation (constant folding, Conv+BN+activation fusion,
    layout transforms to the blocked NCHWc format on x86), sequential execution (the graph is a chain, so parallel
    executors only add scheduling cost) and intra-op threads = ``threads`` (0: one per physical core).
    """

    def __init__(self, contract: ModelContract, contract_path: str | Path, max_batch: int = 8, threads: int = 0,
                 providers: tuple[str, ...] | None = None, engine_cache_dir: Path | None = None):
        import onnxruntime as ort

        if max_batch < 1:
            raise ValueError(f'max_batch must be >= 1, got {max_batch}')
        self.contract = contract
        self.max_batch = max_batch
        model_path = verify_model_file(contract, contract_path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        chosen = providers if providers is not None else tuple(
            p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')
            if p in available)
        try:
            self.session = ort.InferenceSession(
                str(model_path), sess_options=options,
                providers=[(p, self._provider_options(p, engine_cache_dir or model_path.parent)) for p in chosen])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types for unreadable models
            raise ContractError(f'{model_path}: ONNX Runtime cannot load the model (corrupt file?): {exc}') from exc
        check_signature(contract, model_path,
                        {i.name: (tuple(i.shape), _ORT_DTYPES.get(i.type, i.type)) for i in self.session.get_inputs()},
                        {o.name: (tuple(o.shape), _ORT_DTYPES.get(o.type, o.type)) for o in self.session.get_outputs()})
        self.name = f'onnxruntime[{",".join(self.session.get_providers())}]'
        LOGGER.info('%s: %s, max batch %d, %s intra-op threads', self.name, model_path.name, max_batch,
                    threads or 'default')

    def _provider_options(self, provider: str, cache_dir: Path) -> dict[str, str]:
        if provider != 'TensorrtExecutionProvider':
            return {}
        # The TensorRT EP builds its own engine; give it the same profile and a cache so restarts are fast.
        c = self.contract
        shapes = {b: f'{INPUT_IMAGE}:{b}x3x{c.image_size}x{c.image_size},{INPUT_CLASS_EMBEDDING}:{b}x{c.embedding_dim}'
                  for b in (1, self.max_batch)}
        return {'trt_fp16_enable': 'True', 'trt_engine_cache_enable': 'True',
                'trt_engine_cache_path': str(cache_dir), 'trt_timing_cache_enable': 'True',
                'trt_profile_min_shapes': shapes[1], 'trt_profile_opt_shapes': shapes[self.max_batch],
                'trt_profile_max_shapes': shapes[self.max_batch]}

    def run(self, image: np.ndarray, class_embedding: np.ndarray) -> np.ndarray:
        image, class_embedding = validate_inputs(self.contract, image, class_embedding)
        return run_in_chunks(self._run_batch, image, class_embedding, self.max_batch, self.contract.num_points)

    def _run_batch(self, image: np.ndarray, class_embedding: np.ndarray) -> np.ndarray:
        (points,) = self.session.run([OUTPUT_POINTS], {INPUT_IMAGE: image, INPUT_CLASS_EMBEDDING: class_embedding})
        return points

    def close(self) -> None:
        self.session = None


def create_backend(contract_path: str | Path, kind: BackendKind = 'auto', max_batch: int = 8,
                   engine_dir: Path | None = None, threads: int = 0) -> Backend:
    """Load and check the contract, then build the requested backend.

    ``auto``: TensorRT when the ``tensorrt`` module, cuda-python and a GPU are all there (building or reusing a
    cached engine in ``engine_dir``), else — or when the engine cannot be built or started — ONNX Runtime; the
    reason is logged either way. A contract or model file that does not match is a :class:`ContractError` whatever
    the kind: falling back would hide a broken install.
    """
    from mesc3d_ros import tensorrt_backend

    contract_path = Path(contract_path)
    contract = load_contract(contract_path)
    if kind not in ('auto', 'tensorrt', 'onnxruntime'):
        raise ValueError(f'backend kind must be auto, tensorrt or onnxruntime, got {kind!r}')
    if kind != 'onnxruntime':
        usable, reason = tensorrt_backend.tensorrt_usable()
        if not usable:
            if kind == 'tensorrt':
                raise RuntimeError(f'TensorRT backend requested but not usable: {reason}')
            LOGGER.info('backend: ONNX Runtime, because TensorRT is not usable here: %s', reason)
        else:
            LOGGER.info('backend: TensorRT (%s)', reason)
            try:
                return tensorrt_backend.TensorRTBackend(contract, contract_path, max_batch=max_batch,
                                                        engine_dir=engine_dir)
            except RuntimeError as exc:   # engine build or CUDA failure; a ContractError is a ValueError and passes
                if kind == 'tensorrt':
                    raise
                LOGGER.warning('backend: ONNX Runtime, because the TensorRT backend failed to start: %s', exc)
    return OnnxRuntimeBackend(contract, contract_path, max_batch=max_batch, threads=threads)
