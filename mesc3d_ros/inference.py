"""
ONNX Runtime backend and :func:`create_backend`, the one constructor the node needs.

Every backend (``backend.Backend``) takes the contract's tensors (``mesc3d_ros.contract``) and returns ``points``
(B, N, 3) float32 in the model's output frame. :func:`create_backend` reads the contract, checks it against the
model file of the requested precision (sha256, tensor names, dtypes, static dimensions) and picks TensorRT when
usable, else ONNX Runtime, logging why. This module never imports torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mesc3d_ros import tensorrt_backend
from mesc3d_ros.backend import Backend, run_in_chunks, validate_inputs
from mesc3d_ros.contract import (INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, PRECISIONS, ContractError,
                                 ModelContract, Precision, check_signature, load_contract, verify_model_file)

LOGGER = logging.getLogger(__name__)

BackendKind = Literal['auto', 'tensorrt', 'onnxruntime']
PrecisionChoice = Literal['auto', 'fp32', 'fp16', 'int8']
PRECISION_CHOICES: tuple[PrecisionChoice, ...] = ('auto', *PRECISIONS)

# ONNX Runtime reports element types as strings; the contract speaks numpy dtype names.
_ORT_DTYPES = {'tensor(float)': 'float32', 'tensor(float16)': 'float16', 'tensor(double)': 'float64',
               'tensor(int64)': 'int64', 'tensor(int32)': 'int32', 'tensor(uint8)': 'uint8'}


@dataclass(frozen=True)
class SessionSettings:
    """ONNX Runtime session options; the defaults are the ones ``mesc3d bench`` measured best (docs/benchmarks.md)."""

    threads: int = 0
    """Intra-op threads; 0: one per physical core."""
    optimization: Literal['disable', 'basic', 'extended', 'all'] = 'all'
    """Graph optimisation level. ``all`` adds the layout transforms to the blocked NCHWc format on x86 and, for the
    INT8 model, the fusion of QDQ pairs into integer kernels."""
    sequential: bool = True
    """Sequential execution: the graph is a chain, so a parallel executor only adds scheduling cost."""
    memory_arena: bool = True
    """Keep freed buffers in ONNX Runtime's arena (and plan them by pattern) instead of returning them to malloc."""
    spinning: bool = False
    """Let idle intra-op threads spin for work instead of sleeping (ONNX Runtime's default). Off: on a 2-core CPU
    shared with the camera driver, the detector and the node's own Python work, spinning threads burn the cycles
    the others need (``mesc3d bench``: 2.0× the float32 and 3.0× the INT8 throughput without it, docs/benchmarks.md)."""

    def options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = {
            'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL, 'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[self.optimization]
        options.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL if self.sequential
                                  else ort.ExecutionMode.ORT_PARALLEL)
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = self.memory_arena
        options.enable_mem_pattern = self.memory_arena
        options.add_session_config_entry('session.intra_op.allow_spinning', '1' if self.spinning else '0')
        return options


class OnnxRuntimeBackend:
    """
    ONNX Runtime session over the exported model of one precision.

    CPU everywhere, CUDA/TensorRT execution providers if present. Session options: :class:`SessionSettings`.
    """

    def __init__(self, contract: ModelContract, contract_path: str | Path, max_batch: int = 8,
                 precision: Precision = 'fp32', settings: SessionSettings = SessionSettings(),
                 providers: tuple[str, ...] | None = None, engine_cache_dir: Path | None = None):
        import onnxruntime as ort

        if max_batch < 1:
            raise ValueError(f'max_batch must be >= 1, got {max_batch}')
        self.contract = contract
        self.max_batch = max_batch
        self.precision = precision
        model_path = verify_model_file(contract, contract_path, precision)
        options = settings.options()
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
        self.name = f'onnxruntime[{",".join(self.session.get_providers())}] {precision}'
        LOGGER.info('%s: %s, max batch %d, %s', self.name, model_path.name, max_batch, settings)

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


def resolve_precision(contract: ModelContract, contract_path: str | Path, precision: PrecisionChoice,
                      tensorrt: bool) -> Precision:
    """
    Return the model file to run.

    ``auto`` = fp16 on TensorRT, else int8 when the contract has it, else fp32; an explicit precision the contract does
    not offer is a :class:`ContractError` naming what it offers.
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError(f'precision must be one of {", ".join(PRECISION_CHOICES)}, got {precision!r}')
    if precision == 'auto':
        return 'fp16' if tensorrt else 'int8' if 'int8' in contract.precisions else 'fp32'
    if precision not in contract.precisions:
        raise ContractError(f'{contract_path}: precision {precision} requested, but this export offers only '
                            f'{", ".join(contract.precisions)} (re-export with mesc3d export; INT8 needs the '
                            f'validation data to calibrate)')
    return precision


def create_backend(contract_path: str | Path, kind: BackendKind = 'auto', max_batch: int = 8,
                   engine_dir: Path | None = None, threads: int = 0, precision: PrecisionChoice = 'auto') -> Backend:
    """
    Load and check the contract, then build the requested backend at the requested precision.

    ``auto``: TensorRT when the ``tensorrt`` module, cuda-python and a GPU are all there (building or reusing a
    cached engine in ``engine_dir``), else — or when the engine cannot be built or started — ONNX Runtime; the
    reason is logged either way. INT8 runs on ONNX Runtime only (a TensorRT build of the QDQ model is unverified),
    so ``auto`` with ``int8`` picks ONNX Runtime. A contract or model file that does not match, or a precision the
    contract lacks, is a :class:`ContractError` whatever the kind: falling back would hide a broken install.
    """
    contract_path = Path(contract_path)
    contract = load_contract(contract_path)
    if kind not in ('auto', 'tensorrt', 'onnxruntime'):
        raise ValueError(f'backend kind must be auto, tensorrt or onnxruntime, got {kind!r}')
    resolve_precision(contract, contract_path, precision, tensorrt=False)   # refuse what the contract lacks first
    if kind == 'tensorrt' and precision == 'int8':
        raise RuntimeError('precision int8 runs on ONNX Runtime only: a TensorRT engine from the QDQ model is '
                           'unverified; use backend onnxruntime, or precision fp16/fp32 with TensorRT')
    if kind != 'onnxruntime' and precision != 'int8':
        usable, reason = tensorrt_backend.tensorrt_usable()
        if not usable:
            if kind == 'tensorrt':
                raise RuntimeError(f'TensorRT backend requested but not usable: {reason}')
            LOGGER.info('backend: ONNX Runtime, because TensorRT is not usable here: %s', reason)
        else:
            LOGGER.info('backend: TensorRT (%s)', reason)
            try:
                return tensorrt_backend.TensorRTBackend(
                    contract, contract_path, max_batch=max_batch, engine_dir=engine_dir,
                    precision=resolve_precision(contract, contract_path, precision, tensorrt=True))
            except RuntimeError as exc:   # engine build or CUDA failure; a ContractError is a ValueError and passes
                if kind == 'tensorrt':
                    raise
                LOGGER.warning('backend: ONNX Runtime, because the TensorRT backend failed to start: %s', exc)
    return OnnxRuntimeBackend(contract, contract_path, max_batch=max_batch,
                              precision=resolve_precision(contract, contract_path, precision, tensorrt=False),
                              settings=SessionSettings(threads=threads))
