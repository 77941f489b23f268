"""
TensorRT backend: run a cached (or freshly built) engine with the TensorRT ≥ 10 name-based API.

Start-up: :func:`mesc3d_ros.engine_build.load_engine` returns an engine valid for this model, TensorRT version and
GPU, building it if the cache has none; when deserialisation fails anyway (a hand-copied engine, the "Serialization
assertion … Version tag does not match" failure of field.md §1) it is rebuilt from the ONNX once and the reason
logged. The engine's I/O tensors are then checked against the contract like any other model file.

Inference: device buffers for ``max_batch`` items are allocated once; each call sets the input shapes for its batch
(``set_input_shape``), binds addresses (``set_tensor_address``), copies in, ``execute_async_v3`` on a private
stream, copies out and synchronises. Device memory comes from cuda-python's runtime bindings (``cuda.bindings``;
older releases: ``cuda.cudart``), imported lazily so that the package works without them. Never imports torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mesc3d_ros import cuda_runtime
from mesc3d_ros.backend import run_in_chunks, validate_inputs
from mesc3d_ros.contract import (INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, ContractError, ModelContract,
                                 check_signature)
from mesc3d_ros.engine_build import Precision, TensorRTBuilder, default_engine_dir, load_engine

LOGGER = logging.getLogger(__name__)


def tensorrt_usable() -> tuple[bool, str]:
    """Whether the TensorRT backend can run here, and why (or why not), for the log."""
    try:
        import tensorrt
    except ImportError as exc:
        return False, f'the tensorrt Python module is not installed ({exc})'
    try:
        cudart = cuda_runtime.cudart()
    except ImportError as exc:
        return False, f'cuda-python is not installed ({exc})'
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess or count < 1:
        return False, f'no usable CUDA device ({error.name if error else "0 devices"})'
    name, major, minor = cuda_runtime.cuda_device_properties()
    return True, f'TensorRT {tensorrt.__version__} on {name} (sm{major}{minor})'


def _recording_logger(trt):
    """Return a TensorRT logger that forwards to ``logging`` and keeps the errors, so a failed load can say why."""

    class RecordingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                LOGGER.error('TensorRT: %s', msg)
            elif int(severity) == int(trt.ILogger.Severity.WARNING):
                LOGGER.warning('TensorRT: %s', msg)

    return RecordingLogger()


class TensorRTBackend:
    """Runs the contract's model through a TensorRT engine on the first CUDA device."""

    def __init__(self, contract: ModelContract, contract_path: str | Path, max_batch: int = 8,
                 precision: Precision = 'fp16', engine_dir: Path | None = None, engine_path: Path | None = None):
        import tensorrt as trt

        self.trt = trt
        self.contract = contract
        self.max_batch = max_batch
        contract_path = Path(contract_path)
        self.logger = _recording_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine, path = load_engine(contract, contract_path, TensorRTBuilder(),
                                        engine_dir or default_engine_dir(contract_path), self._deserialize,
                                        precision=precision, max_batch=max_batch, engine_path=engine_path)
        self._check_engine(path)
        self.context = self.engine.create_execution_context()
        self.stream = cuda_runtime.check(cuda_runtime.cudart().cudaStreamCreate())
        self.buffers = {name: self._allocate(name) for name in (INPUT_IMAGE, INPUT_CLASS_EMBEDDING, OUTPUT_POINTS)}
        for name, pointer in self.buffers.items():
            self.context.set_tensor_address(name, int(pointer))
        self.name = f'tensorrt[{trt.__version__},{precision}]'
        LOGGER.info('%s: engine %s, max batch %d', self.name, path.name, max_batch)

    def _deserialize(self, blob: bytes) -> tuple[object | None, str]:
        self.logger.errors.clear()
        try:
            engine = self.runtime.deserialize_cuda_engine(blob)
        except (RuntimeError, TypeError) as exc:  # some releases raise instead of returning None
            return None, str(exc)
        return engine, '; '.join(self.logger.errors) or 'deserialize_cuda_engine returned None'

    def _check_engine(self, path: Path) -> None:
        trt, engine = self.trt, self.engine
        signature: dict[bool, dict] = {True: {}, False: {}}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            signature[is_input][name] = (tuple(engine.get_tensor_shape(name)), dtype)
        check_signature(self.contract, path, signature[True], signature[False])
        largest = engine.get_tensor_profile_shape(INPUT_IMAGE, 0)[2][0]
        if largest < self.max_batch:
            raise ContractError(f'{path}: optimisation profile allows batch ≤ {largest}, max_batch is '
                                f'{self.max_batch}')

    def _allocate(self, name: str) -> object:
        shape = list(self.contract.input_shapes().get(name) or self.contract.output_shapes()[name])
        shape[0] = self.max_batch
        nbytes = int(np.prod(shape)) * np.dtype(np.float32).itemsize
        return cuda_runtime.check(cuda_runtime.cudart().cudaMalloc(nbytes))

    def run(self, image: np.ndarray, class_embedding: np.ndarray) -> np.ndarray:
        image, class_embedding = validate_inputs(self.contract, image, class_embedding)
        return run_in_chunks(self._run_batch, image, class_embedding, self.max_batch, self.contract.num_points)

    def _run_batch(self, image: np.ndarray, class_embedding: np.ndarray) -> np.ndarray:
        cudart = cuda_runtime.cudart()
        to_device, to_host = (cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                              cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        points = np.empty((image.shape[0], self.contract.num_points, 3), dtype=np.float32)
        for name, array in ((INPUT_IMAGE, image), (INPUT_CLASS_EMBEDDING, class_embedding)):
            if not self.context.set_input_shape(name, array.shape):
                raise RuntimeError(f'TensorRT refused input shape {array.shape} for "{name}"')
            cuda_runtime.check(cudart.cudaMemcpyAsync(self.buffers[name], array.ctypes.data, array.nbytes,
                                                      to_device, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError('TensorRT execute_async_v3 failed (see the TensorRT log)')
        cuda_runtime.check(cudart.cudaMemcpyAsync(points.ctypes.data, self.buffers[OUTPUT_POINTS], points.nbytes,
                                                  to_host, self.stream))
        cuda_runtime.check(cudart.cudaStreamSynchronize(self.stream))
        return points

    def close(self) -> None:
        cudart = cuda_runtime.cudart()
        for pointer in self.buffers.values():
            cudart.cudaFree(pointer)
        self.buffers = {}
        cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = self.runtime = None
