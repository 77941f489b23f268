"""
``mesc3d bench``: latency and throughput of every inference backend on this machine, torch eager as reference.

For 1, 5 and 10 objects per call each available backend — torch eager (float32, ``inference_mode``), ONNX Runtime
with the float32 and (when the export could calibrate one) the INT8 model, and TensorRT (FP16, when usable) — runs
the same seeded inputs. Calls are interleaved round-robin across backends, so load from other processes on a shared
machine hits all of them alike. Reported: median (p50) and p95 latency per call, throughput in objects/s (batch /
mean call time), the speed-up over torch eager and over ONNX Runtime float32, and what a user can expect from the
node at a 15 and 30 Hz camera: the share of frames answered when each frame costs one such call (the node always
takes the newest frame, so it answers min(1, 1 / (call time × rate)) of them). A second table runs ONNX Runtime
session-option variants (threads, optimisation level, arena, spinning, executor) beside today's defaults at 5
objects. Both tables, with the machine description and the exact command, replace the ``bench:backends`` and
``bench:session`` sections of ``docs/benchmarks.md`` (created if absent); other sections are left alone.

The model is the shipped checkpoint when it exists (``models/mesc3d_mobile.yaml``), else a random-weight model of the
``mobile`` config (``config/mesc3d_mobile.yaml``, or ``--config``): speed does not depend on the weights, and the
table says which.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from mesc3d_ros.config import load_config
from mesc3d_ros.contract import ClassEntry, load_contract
from mesc3d_ros.inference import Backend, OnnxRuntimeBackend, SessionSettings
from mesc3d_ros.tensorrt_backend import tensorrt_usable
from mesc3d_training import SHIPPED_MODEL
from mesc3d_training.checkpoint import LoadedModel, load_model
from mesc3d_training.export import calibration_for, export_model, parity_inputs
from mesc3d_training.model import build_model
from mesc3d_training.reports.markdown_blocks import replace_block

LOGGER = logging.getLogger(__name__)

FALLBACK_CONFIG = Path('config/mesc3d_mobile.yaml')
BENCHMARKS_DOC = Path('docs/benchmarks.md')
BLOCK, HEADING = 'bench:backends', 'Inference backends (`mesc3d bench`)'
SESSION_BLOCK, SESSION_HEADING = 'bench:session', 'ONNX Runtime session options (`mesc3d bench`)'
TORCH_EAGER, ORT_FP32 = 'torch eager (fp32)', 'onnxruntime[CPUExecutionProvider] fp32'
CAMERA_RATES_HZ = (15.0, 30.0)
SESSION_VARIANTS = {
    'defaults': SessionSettings(),
    '1 thread': SessionSettings(threads=1),
    "spinning (ONNX Runtime's default)": SessionSettings(spinning=True),
    'no memory arena': SessionSettings(memory_arena=False),
    'optimisation extended (no NCHWc layout)': SessionSettings(optimization='extended'),
    'parallel executor': SessionSettings(sequential=False),
}
"""ONNX Runtime session options tried beside the defaults (``inference.SessionSettings``)."""
SESSION_BATCH = 5


@dataclass(frozen=True)
class Result:
    backend: str
    batch: int
    p50_ms: float
    p95_ms: float
    objects_per_s: float
    mean_ms: float

    def answered(self, rate_hz: float) -> float:
        """Share of frames a node answers at ``rate_hz`` when one frame costs one such call (newest frame first)."""
        return min(1.0, 1e3 / (self.mean_ms * rate_hz))


def random_weight_model(config_path: Path, seed: int = 0) -> LoadedModel:
    """Build a random-weight model of a config with a random unit-norm class table: same graph, same cost."""
    cfg = load_config(config_path)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(3, cfg.model.text_dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    table = tuple(ClassEntry(name=name, embedding=tuple(float(v) for v in row), size_m=0.2)
                  for name, row in zip(('class_a', 'class_b', 'object'), rows))
    return LoadedModel(model=build_model(cfg.model).eval(), cfg=cfg, classes=table[:2], generic_class=table[2],
                       data_manifest_hash='random-weights', metrics={}, prompts={})


def time_backends(calls: dict[str, Callable[[], object]], warmup: int, iterations: int) -> dict[str, list[float]]:
    """
    Seconds per call of each of ``calls`` (name -> a call with its inputs bound), after ``warmup`` calls each.

    Round-robin, one call of each in turn, so that load from other processes hits every entry alike.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iterations):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def cuda_runners(model: torch.nn.Module) -> dict[str, Callable[[np.ndarray, np.ndarray], object]]:
    """Run torch on the GPU in float32 and float16; host arrays in, host array out, like the other backends."""
    runners = {}
    for name, dtype in (('torch cuda (fp32)', torch.float32), ('torch cuda (fp16)', torch.float16)):
        gpu_model = copy.deepcopy(model).to('cuda', dtype).eval()

        def run(image: np.ndarray, embedding: np.ndarray, gpu_model=gpu_model, dtype=dtype) -> np.ndarray:
            with torch.inference_mode():
                points = gpu_model(torch.from_numpy(image).to('cuda', dtype),
                                   torch.from_numpy(embedding).to('cuda', dtype))
                return points.float().cpu().numpy()   # the copy back synchronises, so the timing is complete
        runners[name] = run
    return runners


def benchmark(loaded: LoadedModel, work_dir: Path, batches: tuple[int, ...], iterations: int, warmup: int,
              calibration_data: str | None = None, sessions: bool = False) -> tuple[list[Result], list[Result]]:
    """
    Export ``loaded`` into ``work_dir``, open every usable backend and time them all on the same inputs.

    INT8 is exported too when its validation data is there; with ``sessions`` the session-option variants are timed
    as well. Return (backends, sessions).
    """
    contract_path = export_model(loaded, work_dir, calibration=calibration_for(loaded, calibration_data))
    contract = load_contract(contract_path)
    max_batch = max(batches)
    backends: list[Backend] = [OnnxRuntimeBackend(contract, contract_path, max_batch=max_batch, precision=precision)
                               for precision in ('fp32', 'int8') if precision in contract.precisions]
    usable, reason = tensorrt_usable()
    if usable:
        from mesc3d_ros.tensorrt_backend import TensorRTBackend

        backends.append(TensorRTBackend(contract, contract_path, max_batch=max_batch, engine_dir=work_dir))
    else:
        LOGGER.info('TensorRT not benchmarked: %s', reason)

    def torch_eager(image: np.ndarray, embedding: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return loaded.model(torch.from_numpy(image), torch.from_numpy(embedding))

    runners = {TORCH_EAGER: torch_eager}
    if torch.cuda.is_available():
        runners |= cuda_runners(loaded.model)
    runners |= {backend.name: backend.run for backend in backends}
    results = [result for batch in batches
               for result in time_all(runners, contract, batch, warmup=warmup, iterations=iterations)]
    session_results = []
    if sessions:
        variants = {f'{precision}, {label}': OnnxRuntimeBackend(contract, contract_path, max_batch=max_batch,
                                                                precision=precision, settings=settings).run
                    for precision in contract.precisions if precision != 'fp16'
                    for label, settings in SESSION_VARIANTS.items()}
        session_results = time_all(variants, contract, SESSION_BATCH, warmup=warmup, iterations=iterations)
    for backend in backends:
        backend.close()
    return results, session_results


def time_all(runners: dict[str, Callable[[np.ndarray, np.ndarray], object]], contract, batch: int, warmup: int,
             iterations: int) -> list[Result]:
    """One :class:`Result` per runner for ``batch`` objects per call, timed round-robin."""
    image, embedding = parity_inputs(contract, batch, seed=batch)
    calls = {name: functools.partial(run, image, embedding) for name, run in runners.items()}
    seconds = time_backends(calls, warmup=warmup, iterations=iterations)
    results = []
    for name, values in seconds.items():
        ms = np.asarray(values) * 1e3
        results.append(Result(backend=name, batch=batch, p50_ms=float(np.percentile(ms, 50)),
                              p95_ms=float(np.percentile(ms, 95)), objects_per_s=batch * 1e3 / float(ms.mean()),
                              mean_ms=float(ms.mean())))
        LOGGER.info('batch %d %-45s p50 %8.1f ms  p95 %8.1f ms  %7.1f objects/s', batch, name,
                    results[-1].p50_ms, results[-1].p95_ms, results[-1].objects_per_s)
    return results


def machine_description(load: str) -> str:
    """CPU model, cores, load, OS and library versions (plus TensorRT/GPU when usable), for the table's caption."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                   if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    _, reason = tensorrt_usable()
    # Other processes compete for the same cores on shared machines; the load average before the run says how much.
    return (f'{cpu}, {len(os.sched_getaffinity(0))} usable cores ({os.cpu_count()} online), 1-min load average '
            f'{load}; '
            f'{platform.system()} {platform.release()}; Python {platform.python_version()}, '
            f'torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__} '
            f'({", ".join(ort.get_available_providers())}), numpy {np.__version__}; TensorRT: {reason}'
            + (f'; GPU: {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ''))


def render_table(results: list[Result], model_note: str, command: str, load_before: float,
                 load_after: float | None = None) -> str:
    reference = {r.batch: r for r in results if r.backend == TORCH_EAGER}
    fp32 = {r.batch: r for r in results if r.backend == ORT_FP32}
    load = f'{load_before:.1f} before the run' + (f', {load_after:.1f} after' if load_after is not None else '')
    lines = [
        f'Measured {datetime.date.today().isoformat()} with `{command}`.',
        '',
        f'- Machine: {machine_description(load)}',
        f'- Model: {model_note}',
        '- Latency: wall time of one call with `batch` objects (inputs already preprocessed, float32 in host '
        'memory; outputs back in host memory). Throughput: batch / mean call time. Frames answered: the share of '
        'camera frames a node answers when each frame costs one such call: min(1, 1 / (mean call time × rate)); '
        'the node benchmark below measures the real node.',
        '',
        '| backend | objects per call | p50 ms | p95 ms | objects/s | vs torch eager | vs ORT fp32 | '
        'frames answered at 15 Hz | at 30 Hz |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in results:
        speedup = reference[r.batch].p50_ms / r.p50_ms if r.batch in reference else float('nan')
        versus_fp32 = f'{fp32[r.batch].mean_ms / r.mean_ms:.2f}×' if r.batch in fp32 else ''
        answered = ' | '.join(f'{100 * r.answered(rate):.0f} %' for rate in CAMERA_RATES_HZ)
        lines.append(f'| {r.backend} | {r.batch} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.objects_per_s:.1f} | '
                     f'{speedup:.2f}× | {versus_fp32} | {answered} |')
    return '\n'.join(lines)


def render_sessions(results: list[Result], command: str) -> str:
    """Render the session-option variants, each against the defaults of its precision."""
    defaults = {r.backend.split(',')[0]: r for r in results if r.backend.endswith(', defaults')}
    lines = [f'Measured {datetime.date.today().isoformat()} with `{command}`, in the same run as the table above '
             f'(round-robin, {SESSION_BATCH} objects per call; ONNX Runtime CPU).', '',
             '| precision, session options | p50 ms | p95 ms | objects/s | vs defaults (throughput) |',
             '|---|---:|---:|---:|---:|']
    for r in results:
        base = defaults[r.backend.split(',')[0]]
        lines.append(f'| {r.backend} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.objects_per_s:.1f} | '
                     f'{r.objects_per_s / base.objects_per_s:.2f}× |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d bench', description=__doc__.strip().splitlines()[0])
    parser.add_argument('--checkpoint', type=Path, help=f'model to time (default: {SHIPPED_MODEL} if present, '
                        f'else random weights of {FALLBACK_CONFIG})')
    parser.add_argument('--config', type=Path, default=FALLBACK_CONFIG, help='config of the random-weight model')
    parser.add_argument('--batches', default='1,5,10', help='comma-separated objects per call')
    parser.add_argument('--calibration-data', help='dataset whose validation crops calibrate the INT8 model '
                        "(default: the checkpoint's data.root; without it INT8 is not benchmarked)")
    parser.add_argument('--no-sessions', action='store_true', help='skip the session-option variants')
    parser.add_argument('--iterations', type=int, default=20, help='timed calls per backend and batch')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--out', type=Path, default=BENCHMARKS_DOC, help='markdown file to update')
    args = parser.parse_args(argv)
    for chatty in ('onnxscript', 'onnx_ir'):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    checkpoint = args.checkpoint or (SHIPPED_MODEL if SHIPPED_MODEL.exists() else None)
    if checkpoint is not None:
        loaded = load_model(checkpoint)
        note = f'`{checkpoint}` ({loaded.cfg.model.name} config, trained weights)'
    else:
        loaded = random_weight_model(args.config)
        note = (f'**random weights** of `{args.config}` ({loaded.cfg.model.name} config; no shipped checkpoint yet — '
                f'speed does not depend on the weights)')
    batches = tuple(int(b) for b in args.batches.split(','))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix='mesc3d_bench_') as work_dir:
        results, sessions = benchmark(loaded, Path(work_dir), batches, args.iterations, args.warmup,
                                      args.calibration_data, sessions=not args.no_sessions)
    command = ('mesc3d bench ' + ' '.join(argv if argv is not None else sys.argv[2:])).strip()
    table = render_table(results, note, command, load_before, os.getloadavg()[0])
    LOGGER.info('wrote %s', replace_block(args.out, BLOCK, table, HEADING))
    if sessions:
        replace_block(args.out, SESSION_BLOCK, render_sessions(sessions, command), SESSION_HEADING)
    return 0
