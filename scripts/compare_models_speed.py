"""
Batch-1 and batch-5 latency of several exported models in ONNX Runtime, alternating call by call in one process.

Usage: ``python scripts/compare_models_speed.py CONTRACT:PRECISION [CONTRACT:PRECISION ...]``, e.g.
``models/mesc3d_mobile.json:int8 engines/small.json:fp32``. Sessions are built as the node builds them
(``SessionSettings`` defaults), inputs are seeded uniform images with class-table embeddings, and the calls of all
models are interleaved so that load from other processes hits each alike (``mesc3d bench`` times one model's
backends the same way). Prints p50 and p95 per model and batch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

from mesc3d_ros.contract import INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS, load_contract
from mesc3d_ros.inference import SessionSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('models', nargs='+', help='CONTRACT_JSON:PRECISION (fp32, fp16 or int8)')
    parser.add_argument('--calls', type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sessions = {}
    for spec in args.models:
        path, precision = spec.rsplit(':', 1)
        contract = load_contract(path)
        session = ort.InferenceSession(str(contract.model_path(path, precision)), SessionSettings().options(),
                                       providers=['CPUExecutionProvider'])
        sessions[spec] = (session, contract)
    for batch in (1, 5):
        feeds = {}
        for spec, (session, contract) in sessions.items():
            size = contract.image_size
            table = contract.embedding_table()
            feeds[spec] = {INPUT_IMAGE: rng.random((batch, 3, size, size), dtype=np.float32),   # (B, 3, S, S)
                           INPUT_CLASS_EMBEDDING: np.ascontiguousarray(table[np.arange(batch) % len(table)])}
            for _ in range(3):  # warm-up: allocations, thread pool
                session.run([OUTPUT_POINTS], feeds[spec])
        seconds = {spec: [] for spec in sessions}
        for _ in range(args.calls):
            for spec, (session, _) in sessions.items():
                start = time.perf_counter()
                session.run([OUTPUT_POINTS], feeds[spec])
                seconds[spec].append(time.perf_counter() - start)
        for spec, values in seconds.items():
            print(f'batch {batch} {spec}: p50 {1e3 * np.median(values):.2f} ms, '
                  f'p95 {1e3 * np.percentile(values, 95):.2f} ms')


if __name__ == '__main__':
    main()
