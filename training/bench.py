"""``mesc3d bench``: latency and throughput of every inference backend on this machine, torch eager as reference.

For batches 1, 4 and 8 (objects per call) each available backend — torch eager (float32, ``inference_mode``),
ONNX Runtime (whatever execution providers this machine has) and TensorRT (FP16, when usable) — runs the same
seeded inputs. Calls are interleaved round-robin across backends, so load from other processes on a shared machine
hits all of them alike. Reported: median (p50) and p95 latency per call, throughput in objects/s (batch / mean call
time) and the speed-up over torch eager. The table, with the machine description and the exact command, replaces
the ``bench:backends`` section of ``docs/benchmarks.md`` (created if absent); other sections are left alone.

The model is the shipped checkpoint when it exists (``models/mesc3d_small.yaml``), else a random-weight model of the
``small`` config (``config/mesc3d_small.yaml``): speed does not depend on the weights, and the table says which.
"""

from __future__ import annotations

import argparse
import copy
import datetime
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
from mesc3d_ros.inference import Backend, OnnxRuntimeBackend
from mesc3d_ros.markdown_blocks import replace_block
from mesc3d_ros.tensorrt_backend import tensorrt_usable
from mesc3d_training import SHIPPED_MODEL
from mesc3d_training.checkpoint import LoadedModel, load_model
from mesc3d_training.export import export_model, parity_inputs
from mesc3d_training.model import build_model

LOGGER = logging.getLogger(__name__)

SMALL_CONFIG = Path('config/mesc3d_small.yaml')
BENCHMARKS_DOC = Path('docs/benchmarks.md')
BLOCK, HEADING = 'bench:backends', 'Inference backends (`mesc3d bench`)'


@dataclass(frozen=True)
class Result:
    backend: str
    batch: int
    p50_ms: float
    p95_ms: float
    objects_per_s: float


def random_small_model(config_path: Path, seed: int = 0) -> LoadedModel:
    """A random-weight model of a config with a random unit-norm class table: same graph, same cost."""
    cfg = load_config(config_path)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(3, cfg.model.text_dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    table = tuple(ClassEntry(name=name, embedding=tuple(float(v) for v in row), size_m=0.2)
                  for name, row in zip(('class_a', 'class_b', 'object'), rows))
    return LoadedModel(model=build_model(cfg.model).eval(), cfg=cfg, classes=table[:2], generic_class=table[2],
                       data_manifest_hash='random-weights', metrics={}, prompts={})


def time_backends(runners: dict[str, Callable[[np.ndarray, np.ndarray], object]], image: np.ndarray,
                  embedding: np.ndarray, warmup: int, iterations: int) -> dict[str, list[float]]:
    """Seconds per call of each runner, measured round-robin (one call of each in turn) after ``warmup`` calls."""
    for run in runners.values():
        for _ in range(warmup):
            run(image, embedding)
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(iterations):
        for name, run in runners.items():
            start = time.perf_counter()
            run(image, embedding)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def cuda_runners(model: torch.nn.Module) -> dict[str, Callable[[np.ndarray, np.ndarray], object]]:
    """torch on the GPU in float32 and float16; host arrays in, host array out, like the other backends."""
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


def benchmark(loaded: LoadedModel, work_dir: Path, batches: tuple[int, ...], iterations: int,
              warmup: int) -> list[Result]:
    """Export ``loaded`` into ``work_dir``, open every usable backend and time them all on the same inputs."""
    contract_path = export_model(loaded, work_dir)
    contract = load_contract(contract_path)
    max_batch = max(batches)
    backends: list[Backend] = [OnnxRuntimeBackend(contract, contract_path, max_batch=max_batch)]
    usable, reason = tensorrt_usable()
    if usable:
        from mesc3d_ros.tensorrt_backend import TensorRTBackend

        backends.append(TensorRTBackend(contract, contract_path, max_batch=max_batch, engine_dir=work_dir))
    else:
        LOGGER.info('TensorRT not benchmarked: %s', reason)

    def torch_eager(image: np.ndarray, embedding: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return loaded.model(torch.from_numpy(image), torch.from_numpy(embedding))

    runners = {'torch eager (fp32)': torch_eager}
    if torch.cuda.is_available():
        runners |= cuda_runners(loaded.model)
    runners |= {backend.name: backend.run for backend in backends}
    results = []
    for batch in batches:
        image, embedding = parity_inputs(contract, batch, seed=batch)
        seconds = time_backends(runners, image, embedding, warmup=warmup, iterations=iterations)
        for name, values in seconds.items():
            ms = np.asarray(values) * 1e3
            results.append(Result(backend=name, batch=batch, p50_ms=float(np.percentile(ms, 50)),
                                  p95_ms=float(np.percentile(ms, 95)), objects_per_s=batch * 1e3 / float(ms.mean())))
            LOGGER.info('batch %d %-40s p50 %8.1f ms  p95 %8.1f ms  %7.1f objects/s', batch, name,
                        results[-1].p50_ms, results[-1].p95_ms, results[-1].objects_per_s)
    for backend in backends:
        backend.close()
    return results


def machine_description(load_before: float) -> str:
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
            f'{load_before:.1f} before the run; '
            f'{platform.system()} {platform.release()}; Python {platform.python_version()}, '
            f'torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__} '
            f'({", ".join(ort.get_available_providers())}), numpy {np.__version__}; TensorRT: {reason}'
            + (f'; GPU: {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ''))


def render_table(results: list[Result], model_note: str, command: str, load_before: float) -> str:
    reference = {r.batch: r for r in results if r.backend == 'torch eager (fp32)'}
    lines = [
        f'Measured {datetime.date.today().isoformat()} with `{command}`.',
        '',
        f'- Machine: {machine_description(load_before)}',
        f'- Model: {model_note}',
        '- Latency: wall time of one call with `batch` objects (inputs already preprocessed, float32 in host '
        'memory; outputs back in host memory). Throughput: batch / mean call time.',
        '',
        '| backend | batch | p50 ms | p95 ms | objects/s | vs torch eager |',
        '|---|---:|---:|---:|---:|---:|',
    ]
    for r in results:
        speedup = reference[r.batch].p50_ms / r.p50_ms
        lines.append(f'| {r.backend} | {r.batch} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.objects_per_s:.1f} | '
                     f'{speedup:.2f}× |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d bench', description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', type=Path, help=f'model to time (default: {SHIPPED_MODEL} if present, '
                        f'else random weights of {SMALL_CONFIG})')
    parser.add_argument('--config', type=Path, default=SMALL_CONFIG, help='config of the random-weight model')
    parser.add_argument('--batches', default='1,4,8', help='comma-separated objects per call')
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
        loaded = random_small_model(args.config)
        note = (f'**random weights** of `{args.config}` ({loaded.cfg.model.name} config; no shipped checkpoint yet — '
                f'speed does not depend on the weights)')
    batches = tuple(int(b) for b in args.batches.split(','))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix='mesc3d_bench_') as work_dir:
        results = benchmark(loaded, Path(work_dir), batches, args.iterations, args.warmup)
    command = 'mesc3d bench ' + ' '.join(argv if argv is not None else sys.argv[2:])
    LOGGER.info('wrote %s', replace_block(args.out, BLOCK, render_table(results, note, command.strip(), load_before), HEADING))
    return 0
