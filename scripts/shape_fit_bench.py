"""
Benchmark of the shape fit (docs/benchmarks.md §Shape fit).

Its time per object, and the node's own work per frame with it, as a share of the backend time, at 5 objects per frame.

The frame is the node benchmark's synthetic one (``mesc3d_training.bench.node``: 640×480, boxes of 60-140 px, a
ball in every box and a floor behind in 16UC1 depth). Per object, the node's pipeline itself runs on it
(``ReconstructionPipeline.process`` with depth, its backend replaced by one that answers a 1,024-point unit sphere
at no cost), and its calls of ``fit_shape`` and ``visible_surface`` are timed where the pipeline makes them: p50 of
wall and CPU (the calling thread's) time per call, and the whole frame with and without ``depth_fit`` per object.
The machine is shared, and CPU time is what the fit costs whoever else runs. Node work: the in-process part of the
node benchmark (conversions, crops, placement with the fit, output messages) against the real backend's time of the
same frames.

    PYTHONPATH=. python scripts/shape_fit_bench.py --model models/mesc3d_mobile.json
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mesc3d_ros import pipeline as pipeline_module
from mesc3d_ros.contract import load_contract
from mesc3d_ros.inference import create_backend
from mesc3d_ros.pipeline import PipelineSettings, ReconstructionPipeline
from mesc3d_training.bench.node import K, TimedBackend, node_work, synthetic_depth, synthetic_frame

LOGGER = logging.getLogger(__name__)


def fibonacci_sphere(count: int) -> np.ndarray:
    """(count, 3) points spread evenly on the unit sphere."""
    index = np.arange(count) + 0.5
    z = 1.0 - 2.0 * index / count
    azimuth = np.pi * (1.0 + 5.0 ** 0.5) * index
    ring = np.sqrt(1.0 - z * z)
    return np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1)


class SphereBackend:
    """A backend that answers every crop with the same unit sphere, at no cost: the pipeline's own work alone."""

    name = 'sphere'

    def __init__(self, points: int, max_batch: int) -> None:
        self.sphere = fibonacci_sphere(points).astype(np.float32)  # (N, 3) unit ball
        self.max_batch = max_batch

    def run(self, image: np.ndarray, class_embedding: np.ndarray) -> np.ndarray:
        return np.repeat(self.sphere[None], len(image), axis=0)  # (B, N, 3)

    def close(self) -> None:
        """Nothing to release."""


class CallTimes:
    """
    Wraps a function of the pipeline module and records the wall and CPU seconds of each call.

    CPU time is the calling thread's (``time.thread_time``): the pipeline cuts out visible surfaces on its second
    thread while the fit runs, and the process's CPU time would charge that work to the fit.
    """

    def __init__(self, function: Callable) -> None:
        self.function = function
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, *args):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        result = self.function(*args)
        self.wall.append(time.perf_counter() - start_wall)
        self.cpu.append(time.thread_time() - start_cpu)
        return result


def fit_timing(model: Path, objects: int, points: int, repeats: int) -> dict[str, float]:
    """
    Time the pipeline's depth path on the synthetic frame.

    Return the p50 ms per call of the pipeline's ``fit_shape`` and ``visible_surface`` (wall, CPU; CPU p10 of the
    fit), the frame's p50 ms with and without the fit, and the share of its objects that were fitted.

    The CPU p10 is what the fit costs when the other processes leave the core and its caches alone for a moment.
    """
    image, boxes = synthetic_frame(objects)
    depth_m = synthetic_depth(boxes).astype(np.float32) * 0.001
    contract = load_contract(model)
    classes, scores = [contract.class_names[0]] * objects, np.ones(objects)
    frame_ms = {}
    for depth_fit in (False, True):  # the per-call times kept below are the last run's: with the fit
        pipeline = ReconstructionPipeline(SphereBackend(points, objects), contract,
                                          PipelineSettings(depth_fit=depth_fit))
        fit, surface = CallTimes(pipeline_module.fit_shape), CallTimes(pipeline_module.visible_surface)
        # The pipeline module's names, wrapped: the calls the pipeline makes, timed where it makes them.
        pipeline_module.fit_shape, pipeline_module.visible_surface = fit, surface
        try:
            fitted, _ = pipeline.process(image, boxes, classes, scores, K, depth_m)  # also the warm-up
            fit.wall.clear(), fit.cpu.clear(), surface.wall.clear(), surface.cpu.clear()
            wall = []
            for _ in range(repeats):
                start = time.perf_counter()
                pipeline.process(image, boxes, classes, scores, K, depth_m)
                wall.append(time.perf_counter() - start)
        finally:
            pipeline_module.fit_shape, pipeline_module.visible_surface = fit.function, surface.function
            pipeline.close()
        frame_ms[depth_fit] = 1e3 * float(np.median(wall))
    return {'fit_wall_ms': 1e3 * float(np.median(fit.wall)), 'fit_cpu_ms': 1e3 * float(np.median(fit.cpu)),
            'fit_cpu_p10_ms': 1e3 * float(np.percentile(fit.cpu, 10)),
            'surface_wall_ms': 1e3 * float(np.median(surface.wall)),
            'surface_cpu_ms': 1e3 * float(np.median(surface.cpu)),
            'surfaces_per_object': len(surface.wall) / repeats / objects,
            'frame_fit_ms': frame_ms[True], 'frame_box_ms': frame_ms[False],
            'fitted': sum(obj.placement.mode == 'fit' for obj in fitted) / objects}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--model', type=Path, required=True, help='model contract JSON (for the node work)')
    parser.add_argument('--objects', type=int, default=5)
    parser.add_argument('--points', type=int, default=1024)
    parser.add_argument('--repeats', type=int, default=40)
    parser.add_argument('--iterations', type=int, default=20, help='frames for the node work')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    LOGGER.info('load average before: %.1f', os.getloadavg()[0])
    times = fit_timing(args.model, args.objects, args.points, args.repeats)
    LOGGER.info('shape fit (fit_shape) per object (%d points, %.0f %% of %d objects fitted): wall p50 %.2f ms, CPU '
                'p50 %.2f ms, CPU p10 %.2f ms', args.points, 100 * times['fitted'], args.objects,
                times['fit_wall_ms'], times['fit_cpu_ms'], times['fit_cpu_p10_ms'])
    LOGGER.info('visible surface per call (%.1f calls per object, on the second thread): wall p50 %.2f ms, CPU p50 '
                '%.2f ms', times['surfaces_per_object'], times['surface_wall_ms'], times['surface_cpu_ms'])
    LOGGER.info('pipeline frame without the backend (%d objects): %.2f ms with the fit, %.2f ms placed from box and '
                'depth: %.2f ms per object for the fit', args.objects, times['frame_fit_ms'], times['frame_box_ms'],
                (times['frame_fit_ms'] - times['frame_box_ms']) / args.objects)
    image, boxes = synthetic_frame(args.objects)
    for depth_fit in (True, False):
        backend = TimedBackend(create_backend(args.model, 'onnxruntime', max_batch=args.objects))
        work_ms, backend_ms = node_work(args.model, backend, image, boxes, args.iterations, depth_fit)
        LOGGER.info('%d objects, depth_fit %s: node work p50 %.1f ms, backend p50 %.1f ms (same frames): %.0f %%',
                    args.objects, depth_fit, work_ms, backend_ms, 100 * work_ms / backend_ms)
    LOGGER.info('load average after: %.1f', os.getloadavg()[0])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
