"""
Batch-1 and batch-5 latency of several exported models in ONNX Runtime, alternating call by call in one process.

Usage: ``python scripts/compare_models_speed.py CONTRACT:PRECISION [CONTRACT:PRECISION ...]``, e.g.
``models/mesc3d_mobile.json:int8 engines/small.json:fp32``. Each model runs in the node's backend
(``OnnxRuntimeBackend``, ``SessionSettings`` defaults) on the export's seeded parity inputs, and the calls of all
models are interleaved by ``mesc3d bench``'s timing loop (``bench.backends.time_backends``) so that load from other
processes hits each alike. Prints p50 and p95 per model and batch.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np

from mesc3d_ros.contract import load_contract
from mesc3d_ros.inference import OnnxRuntimeBackend
from mesc3d_training.bench.backends import time_backends
from mesc3d_training.export import parity_inputs

BATCHES = (1, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('models', nargs='+', help='CONTRACT_JSON:PRECISION (fp32, fp16 or int8)')
    parser.add_argument('--calls', type=int, default=40)
    args = parser.parse_args()
    backends = {}
    for spec in args.models:
        path, precision = spec.rsplit(':', 1)
        backends[spec] = OnnxRuntimeBackend(load_contract(path), path, max_batch=max(BATCHES), precision=precision)
    for batch in BATCHES:
        calls = {spec: functools.partial(backend.run, *parity_inputs(backend.contract, batch, seed=batch))
                 for spec, backend in backends.items()}
        for spec, values in time_backends(calls, warmup=3, iterations=args.calls).items():
            print(f'batch {batch} {spec}: p50 {1e3 * np.median(values):.2f} ms, '
                  f'p95 {1e3 * np.percentile(values, 95):.2f} ms')
    for backend in backends.values():
        backend.close()


if __name__ == '__main__':
    main()
