"""
TensorRT engine build and cache: ``mesc3d engine build MODEL.onnx [--max-batch 8] [--fp16|--fp32]``.

Engines are build artefacts of the target machine (field.md §1, §4): serialised engines are specific to the
TensorRT version and the GPU, so the cache file name carries everything that makes an engine valid, as Jetson users
expect from jetson-inference::

    <model>.<onnx sha256[:12]>.trt<version>.<gpu>.sm<compute capability>.<precision>.b<max batch>.engine

and a JSON sidecar holds the same key, so a copied or explicitly named engine can still be checked. A missing or
mismatched engine is (re)built from the ONNX, with the reason logged; engines and the timing cache are written
atomically (temporary file + rename), so an interrupted build never leaves a truncated engine under the final name.

Precision: TensorRT 10 builds the float32 ONNX with the FP16 builder flag (weak typing). TensorRT 11 removed weak
typing, so there the float16-weight ONNX that ``mesc3d export`` writes beside the float32 one is built as a strongly
typed network. The optimisation profile covers batch 1 … max batch with the optimum at ``opt_batch`` (default 1: the
per-object latency target of field.md §9 is for a single object).

Everything TensorRT/CUDA-specific sits in :class:`TensorRTBuilder` (imported lazily); the cache logic takes any
object with its two methods, which is how it is tested on machines without a GPU. This module never imports torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

from mesc3d_ros.contract import (BATCH_AXIS, ContractError, ModelContract, load_contract, verify_model_file,
                                 write_atomic)
from mesc3d_ros.cuda_runtime import cuda_device_properties

LOGGER = logging.getLogger(__name__)

Precision = Literal['fp16', 'fp32']
ENGINE_SUFFIX = '.engine'
KEY_SUFFIX = '.json'
DEFAULT_WORKSPACE_MIB = 1024
"""Builder scratch memory; enough for every tactic of this model, and fits next to it on an 8 GB Orin Nano."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX or build an engine; the message carries the parser/builder errors."""


@dataclass(frozen=True)
class Platform:
    """What an engine is specific to, as the running TensorRT and CUDA report it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    """``major.minor``, e.g. ``8.7`` for Jetson Orin."""
    weakly_typed: bool
    """True when the builder still has the FP16 flag (TensorRT ≤ 10); False: strongly typed networks only."""


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialised engine is valid for; equal keys mean the cached engine can be reused."""

    model_sha256: str
    """sha256 of the ONNX file that was parsed."""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: Precision
    max_batch: int
    opt_batch: int

    def file_name(self, model_name: str) -> str:
        gpu = re.sub(r'[^a-z0-9]+', '-', self.gpu_name.lower()).strip('-') or 'gpu'
        return (f'{model_name}.{self.model_sha256[:12]}.trt{self.tensorrt_version}.{gpu}'
                f'.sm{self.compute_capability.replace(".", "")}.{self.precision}.b{self.max_batch}'
                f'{"" if self.opt_batch == 1 else f"o{self.opt_batch}"}{ENGINE_SUFFIX}')

    def mismatches(self, other: EngineKey) -> list[str]:
        """Human-readable ``field: cached X, needed Y`` for every field that differs."""
        mine, theirs = asdict(self), asdict(other)
        return [f'{field}: cached {theirs[field]!r}, needed {mine[field]!r}'
                for field in mine if mine[field] != theirs[field]]


class EngineToolkit(Protocol):
    """The TensorRT calls the cache needs; :class:`TensorRTBuilder` is the real one."""

    def platform(self) -> Platform:
        """Return the TensorRT version, GPU name, compute capability and typing mode of this machine."""

    def build(self, onnx_path: Path, shapes: dict[str, tuple[tuple[int, ...], ...]], precision: Precision,
              workspace_bytes: int, timing_cache: bytes) -> tuple[bytes, bytes]:
        """Parse and build: (serialised engine, updated serialised timing cache)."""


def profile_shapes(contract: ModelContract, max_batch: int,
                   opt_batch: int = 1) -> dict[str, tuple[tuple[int, ...], ...]]:
    """{input: (min, opt, max) shapes}: the contract's input shapes with the batch axis at 1 / opt / max."""
    if max_batch < 1 or not 1 <= opt_batch <= max_batch:
        raise ValueError(f'need 1 <= opt_batch <= max_batch, got opt_batch={opt_batch}, max_batch={max_batch}')
    return {name: tuple(tuple(batch if dim == BATCH_AXIS else dim for dim in shape)
                        for batch in (1, opt_batch, max_batch))
            for name, shape in contract.input_shapes().items()}


def default_engine_dir(contract_path: Path) -> Path:
    """
    Engines go next to the model when that folder is writable (a source checkout).

    Else to the user cache (an installed package's share/ folder is read-only, and an unwritable cache means a rebuild
    on every start).
    """
    folder = Path(contract_path).resolve().parent
    if os.access(folder, os.W_OK):
        return folder
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'mesc3d_ros' / 'engines'


def build_model_path(contract: ModelContract, contract_path: Path, precision: Precision,
                     platform: Platform) -> tuple[Path, str]:
    """(path, sha256) of the verified ONNX to parse: float32 unless a strongly typed TensorRT must build float16."""
    fp16_graph = precision == 'fp16' and not platform.weakly_typed
    if fp16_graph and not contract.fp16_model_file:
        raise EngineBuildError(f'TensorRT {platform.tensorrt_version} builds FP16 only from a float16 ONNX (strong '
                               f'typing), and {contract_path} names none: re-export, or build with --fp32')
    path = verify_model_file(contract, contract_path, 'fp16' if fp16_graph else 'fp32')
    return path, contract.fp16_model_sha256 if fp16_graph else contract.model_sha256


def stale_reason(engine_path: Path, key: EngineKey) -> str | None:
    """None when ``engine_path`` holds an engine built for ``key``; otherwise why it must be (re)built."""
    key_path = engine_path.with_suffix(KEY_SUFFIX)
    if not engine_path.is_file():
        return f'no cached engine at {engine_path}'
    try:
        cached = EngineKey(**json.loads(key_path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        return f'engine {engine_path} has no readable key file {key_path.name} ({exc})'
    differences = key.mismatches(cached)
    if differences:
        return f'cached engine {engine_path} was built for another model/platform: {"; ".join(differences)}'
    return None


def ensure_engine(contract: ModelContract, contract_path: Path, toolkit: EngineToolkit, engine_dir: Path,
                  precision: Precision = 'fp16', max_batch: int = 8, opt_batch: int = 1,
                  workspace_mib: int = DEFAULT_WORKSPACE_MIB, engine_path: Path | None = None,
                  force_reason: str | None = None) -> Path:
    """
    Path of an engine valid for this model and machine, building it first when the cache has none.

    ``engine_path`` overrides the keyed file name (Isaac ROS's ``engine_file_path``); its key file is still
    checked. ``force_reason`` rebuilds unconditionally (e.g. the runtime refused to deserialise the cached engine).
    """
    platform = toolkit.platform()
    onnx_path, onnx_sha256 = build_model_path(contract, contract_path, precision, platform)
    key = EngineKey(model_sha256=onnx_sha256, tensorrt_version=platform.tensorrt_version,
                    gpu_name=platform.gpu_name, compute_capability=platform.compute_capability,
                    precision=precision, max_batch=max_batch, opt_batch=opt_batch)
    engine_path = engine_path or Path(engine_dir) / key.file_name(contract.name)
    reason = force_reason or stale_reason(engine_path, key)
    if reason is None:
        LOGGER.info('reusing cached TensorRT engine %s', engine_path)
        return engine_path
    LOGGER.warning('building TensorRT engine (can take minutes) because %s', reason)
    timing_path = engine_path.parent / (f'timing.trt{platform.tensorrt_version}.'
                                        f'sm{platform.compute_capability.replace(".", "")}.cache')
    timing = timing_path.read_bytes() if timing_path.is_file() else b''
    engine, timing = toolkit.build(onnx_path, profile_shapes(contract, max_batch, opt_batch), precision,
                                   workspace_mib << 20, timing)
    write_atomic(engine_path, engine)
    write_atomic(engine_path.with_suffix(KEY_SUFFIX), json.dumps(asdict(key), indent=1).encode())
    write_atomic(timing_path, timing)
    LOGGER.info('wrote TensorRT engine %s (%.1f MB)', engine_path, len(engine) / 1e6)
    return engine_path


def load_engine(contract: ModelContract, contract_path: Path, toolkit: EngineToolkit, engine_dir: Path,
                deserialize: Callable[[bytes], tuple[object | None, str]], precision: Precision = 'fp16',
                max_batch: int = 8, engine_path: Path | None = None) -> tuple[object, Path]:
    """
    (deserialised engine, its path).

    The cached engine, or one rebuilt because the cache had none, had a mismatched key, or held bytes this TensorRT
    refuses (``deserialize`` returns None and the reason, e.g. the "Version tag does not match" assertion of an engine
    from another TensorRT release).
    """
    path = ensure_engine(contract, contract_path, toolkit, engine_dir, precision=precision, max_batch=max_batch,
                         engine_path=engine_path)
    engine, error = deserialize(path.read_bytes())
    if engine is None:
        LOGGER.warning('TensorRT cannot deserialise %s (%s); rebuilding it from the ONNX', path, error)
        path = ensure_engine(contract, contract_path, toolkit, engine_dir, precision=precision, max_batch=max_batch,
                             engine_path=path, force_reason=f'deserialisation failed: {error}')
        engine, error = deserialize(path.read_bytes())
        if engine is None:
            raise EngineBuildError(f'{path}: TensorRT cannot deserialise the engine it just built: {error}')
    return engine, path


class TensorRTBuilder:
    """The real toolkit: TensorRT ≥ 10 Python API plus cuda-python for the device properties."""

    def __init__(self, verbose: bool = False):
        import tensorrt as trt

        self.trt = trt
        self.logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)

    def platform(self) -> Platform:
        name, major, minor = cuda_device_properties()
        return Platform(tensorrt_version=self.trt.__version__, gpu_name=name, compute_capability=f'{major}.{minor}',
                        weakly_typed=hasattr(self.trt.BuilderFlag, 'FP16'))

    def build(self, onnx_path: Path, shapes: dict[str, tuple[tuple[int, ...], ...]], precision: Precision,
              workspace_bytes: int, timing_cache: bytes) -> tuple[bytes, bytes]:
        trt = self.trt
        builder = trt.Builder(self.logger)
        weakly_typed = hasattr(trt.BuilderFlag, 'FP16')
        # 10.x: opt into strong typing for the float16 graph; 11.x: always strongly typed (flag accepted, ignored).
        flags = 0 if weakly_typed else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineBuildError(f'{onnx_path}: TensorRT cannot parse the ONNX: {errors}')
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        if precision == 'fp16' and weakly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, (smallest, optimum, largest) in shapes.items():
            profile.set_shape(name, smallest, optimum, largest)
        config.add_optimization_profile(profile)
        # A timing cache from another TensorRT version or GPU is rejected by TensorRT itself (ignore_mismatch=False).
        config.set_timing_cache(config.create_timing_cache(timing_cache), False)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise EngineBuildError(f'{onnx_path}: TensorRT failed to build the engine (see the TensorRT log above)')
        return bytes(engine), bytes(config.get_timing_cache().serialize())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d engine', description='Build (or reuse) a TensorRT engine for an '
                                     'exported model; the model contract <name>.json must sit next to the ONNX.')
    parser.add_argument('action', choices=['build'])
    parser.add_argument('model', type=Path, help='exported MODEL.onnx (or its contract MODEL.json)')
    parser.add_argument('--max-batch', type=int, default=8, help='largest batch of the optimisation profile')
    parser.add_argument('--opt-batch', type=int, default=1, help='batch the kernels are tuned for')
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--fp16', dest='precision', action='store_const', const='fp16', help='default')
    precision.add_argument('--fp32', dest='precision', action='store_const', const='fp32')
    parser.add_argument('--workspace-mib', type=int, default=DEFAULT_WORKSPACE_MIB)
    parser.add_argument('--engine-dir', type=Path, help='cache folder (default: next to the model if writable)')
    parser.add_argument('--force', action='store_true', help='rebuild even when a valid cached engine exists')
    parser.add_argument('--verbose', action='store_true', help='TensorRT verbose log')
    args = parser.parse_args(argv)
    contract_path = args.model.with_suffix('.json')
    if not contract_path.is_file():
        raise ContractError(f'{args.model}: no model contract {contract_path.name} next to it (write both with '
                            f'mesc3d export)')
    contract = load_contract(contract_path)
    try:
        builder = TensorRTBuilder(verbose=args.verbose)
    except ImportError as exc:
        raise EngineBuildError(f'engine build needs the TensorRT >= 10 Python module (JetPack 6, or pip install '
                               f'tensorrt on a desktop with an NVIDIA GPU): {exc}') from exc
    path = ensure_engine(contract, contract_path, builder,
                         args.engine_dir or default_engine_dir(contract_path), precision=args.precision or 'fp16',
                         max_batch=args.max_batch, opt_batch=args.opt_batch, workspace_mib=args.workspace_mib,
                         force_reason='--force given' if args.force else None)
    print(path)
    return 0
