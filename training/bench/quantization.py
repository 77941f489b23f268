"""
INT8 sensitivity of a checkpoint's model: CD-L1 and speed of each quantisation variant on the validation split.

``python -m mesc3d_training.bench.quantization CHECKPOINT [--data-root DIR] [--no-blocks]`` exports the checkpoint,
then scores float32, the shipped INT8 settings (``quantize.QUANTIZED_OPS`` inside ``quantize.QUANTIZED_BLOCKS``),
other block and op-set choices and, block by block, the shipped settings with one block kept float. It prints a
markdown table (the one the shipped settings were chosen from). Timings are ONNX Runtime CPU time per call at batch
5 on one thread, comparable within one run only.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from mesc3d_ros.contract import INPUT_CLASS_EMBEDDING, INPUT_IMAGE, OUTPUT_POINTS
from mesc3d_ros.inference import SessionSettings
from mesc3d_training.checkpoint import load_model
from mesc3d_training.export import export_model
from mesc3d_training.quantize import (FLOAT_BLOCKS, QUANTIZED_BLOCKS, QUANTIZED_OPS, CalibrationSet, cd_l1,
                                      load_calibration_set, quantizable_blocks, quantize_int8, quantized_block,
                                      run_model)

FULL_OPS = (*QUANTIZED_OPS, 'LeakyRelu', 'Mul')
"""The op set of the sensitivity table's whole-model variants: adds the decoder's activation and modulation."""


def block_sensitivity(fp32_path: Path, calibration: CalibrationSet, work_dir: Path,
                      blocks: bool = True) -> Iterator[dict]:
    """
    Yield the CD-L1 on the calibration split of each variant of the model.

    The variants: float32; the shipped INT8 settings (:data:`QUANTIZED_BLOCKS` less :data:`FLOAT_BLOCKS`); the whole
    encoder; the shipped settings plus the MIT, or plus the decoder's convolutions (its modulations and activations
    float); the whole model; and (``blocks``) the shipped settings with one more of their blocks kept float, block by
    block. Also the CPU time per call at batch 5 (:func:`time_model`).
    """
    image, embedding = calibration.image, calibration.embedding

    def score(path: Path) -> dict:
        return {'cd_l1': cd_l1(run_model(path, image, embedding), calibration.points),
                'ms_batch5': 1e3 * time_model(path, image[:5], embedding[:5])}

    fp32 = score(fp32_path)
    yield {'variant': 'float32', **fp32}
    variants = [(f'int8, shipped settings ({", ".join(QUANTIZED_BLOCKS)} less {", ".join(FLOAT_BLOCKS)})',
                 QUANTIZED_OPS, QUANTIZED_BLOCKS, FLOAT_BLOCKS),
                ('int8, the whole image encoder', QUANTIZED_OPS, ('image_encoder',), ()),
                ('int8, shipped settings + MIT', QUANTIZED_OPS, (*QUANTIZED_BLOCKS, 'mit'), FLOAT_BLOCKS),
                ("int8, shipped settings + the decoder's convolutions", QUANTIZED_OPS,
                 (*QUANTIZED_BLOCKS, 'decoder'), FLOAT_BLOCKS),
                ('int8, every block (ESM modulations and LeakyReLU too)', FULL_OPS, ('',), ())]
    if blocks:
        variants += [(f'int8, shipped settings, {block} float too', QUANTIZED_OPS, QUANTIZED_BLOCKS,
                      (*FLOAT_BLOCKS, block))
                     for block in quantizable_blocks(onnx.load(str(fp32_path)))
                     if quantized_block(block)]
    for label, op_types, quantized, float_blocks in variants:
        path = work_dir / 'variant.onnx'
        # One range cache per op set: the calibrator records the tensors of the ops it is asked to quantise.
        quantize_int8(fp32_path, path, calibration, quantized, float_blocks, op_types=op_types,
                      cache_path=work_dir / f'ranges_{len(op_types)}.json')
        row = score(path)
        yield {'variant': label, **row, 'vs_fp32_pct': 100.0 * (row['cd_l1'] / fp32['cd_l1'] - 1.0),
               'speedup': fp32['ms_batch5'] / row['ms_batch5']}


def time_model(path: Path, image: np.ndarray, embedding: np.ndarray, calls: int = 10) -> float:
    """
    Median CPU seconds per call of one batch after two warm-up calls (ONNX Runtime CPU, one intra-op thread).

    CPU time of the calling thread, which does all the work with one intra-op thread: unlike wall time it barely
    moves when other processes share the cores, and variants are timed one after another, not round-robin.
    """
    session = ort.InferenceSession(str(path), SessionSettings(threads=1).options(),
                                   providers=['CPUExecutionProvider'])
    feed = {INPUT_IMAGE: image, INPUT_CLASS_EMBEDDING: embedding}
    for _ in range(2):
        session.run([OUTPUT_POINTS], feed)
    seconds = []
    for _ in range(calls):
        start = time.thread_time()
        session.run([OUTPUT_POINTS], feed)
        seconds.append(time.thread_time() - start)
    return float(np.median(seconds))


def main(argv: list[str] | None = None) -> int:
    """Per-block sensitivity table of a checkpoint's INT8 model on the validation split (markdown to stdout)."""
    parser = argparse.ArgumentParser(prog='python -m mesc3d_training.bench.quantization', description=main.__doc__)
    parser.add_argument('checkpoint', type=Path)
    parser.add_argument('--data-root', help='dataset folder, if not the one the checkpoint was trained on')
    parser.add_argument('--no-blocks', action='store_true', help='op-set variants only, no block-by-block rows')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    for chatty in ('onnxscript', 'onnx_ir'):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    loaded = load_model(args.checkpoint)
    cfg = loaded.cfg if not args.data_root else replace(loaded.cfg,
                                                        data=replace(loaded.cfg.data, root=args.data_root))
    calibration = load_calibration_set(cfg, loaded.classes, loaded.generic_class)
    with tempfile.TemporaryDirectory(prefix='mesc3d_quantize_') as work:
        work_dir = Path(work)
        contract_path = export_model(loaded, work_dir / 'model')
        print(f'| variant ({calibration.split}, {len(calibration.items)} crops) | CD-L1 ×10² | vs float32 | '
              f'CPU ms per call of 5 (1 thread) | speed-up |')
        print('|---|---:|---:|---:|---:|')
        for row in block_sensitivity(contract_path.with_suffix('.onnx'), calibration, work_dir,
                                     blocks=not args.no_blocks):
            change = f'{row["vs_fp32_pct"]:+.1f} %' if 'vs_fp32_pct' in row else ''
            speedup = f'{row["speedup"]:.2f}×' if 'speedup' in row else ''
            print(f'| {row["variant"]} | {100 * row["cd_l1"]:.3f} | {change} | {row["ms_batch5"]:.1f} | {speedup} |',
                  flush=True)
        print(f'\n1-min load average {os.getloadavg()[0]:.1f} at the end (timings are comparable within one run only)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
