"""
Benchmark of the shape fit (docs/benchmarks.md §Shape fit).

Its time per object, and the node's own work per frame with it, as a share of the backend time, at 5 objects per frame.

The frame is the node benchmark's synthetic one (``mesc3d_training.bench.node``: 640×480, boxes of 60-140 px, a
ball in every box and a floor behind in 16UC1 depth). Per object: ``visible_surface`` + ``fit_shape`` of a
1,024-point unit sphere, p50 of wall and CPU (process) time; the machine is shared, and CPU time is what the fit
costs whoever else runs. Node work: the in-process part of the node benchmark (conversions, crops, placement with the
fit, output messages) against the backend time of the same frames.

    PYTHONPATH=. python scripts/shape_fit_bench.py --model engines/small.json
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

from mesc3d_ros import geometry
from mesc3d_ros.inference import create_backend
from mesc3d_ros.shape_fit import FitSettings, fit_shape
from mesc3d_ros.visible_surface import SurfaceSettings, visible_surface
from mesc3d_training.bench.node import K, TimedBackend, node_work, synthetic_depth, synthetic_frame

LOGGER = logging.getLogger(__name__)


def fibonacci_sphere(count: int) -> np.ndarray:
    """(count, 3) points spread evenly on the unit sphere."""
    index = np.arange(count) + 0.5
    z = 1.0 - 2.0 * index / count
    azimuth = np.pi * (1.0 + 5.0 ** 0.5) * index
    ring = np.sqrt(1.0 - z * z)
    return np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1)


def fit_object(depth_m: np.ndarray, box: np.ndarray, unit: np.ndarray) -> bool:
    """Return what the pipeline does per object with depth (``ReconstructionPipeline._fitted``); True when it fitted."""
    prior, window = geometry.PlacementPrior(), geometry.DepthWindow()
    surface = visible_surface(depth_m, K, box, window, prior.box_fill, SurfaceSettings())
    if surface is None:
        return False
    x0, y0, x1, y1 = box
    ray = geometry.pixel_ray(K, (x0 + x1) / 2, (y0 + y1) / 2)
    start = geometry.place(K, box, 1.0, surface.front_depth_m / float(ray[2]), True, prior)
    return fit_shape(unit @ start.rotation.T, surface.points, start.radius_m, ray, K, box, FitSettings()).accepted


def fit_timing(objects: int, points: int, repeats: int) -> tuple[float, float, float, int]:
    """
    (wall p50 ms, CPU p50 ms, CPU p10 ms) per object, and how many of the frame's objects were fitted.

    The p10 is what the fit costs when the other processes leave the core and its caches alone for a moment.
    """
    _, boxes = synthetic_frame(objects)
    depth_m = synthetic_depth(boxes).astype(np.float32) * 0.001
    unit = fibonacci_sphere(points)
    fitted = sum(fit_object(depth_m, box, unit) for box in boxes)  # also the warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        for box in boxes:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            fit_object(depth_m, box, unit)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu)), 1e3 * float(np.percentile(cpu, 10)), fitted


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
    wall_ms, cpu_ms, cpu_low_ms, fitted = fit_timing(args.objects, args.points, args.repeats)
    LOGGER.info('shape fit per object (%d points, %d of %d objects fitted): wall p50 %.2f ms, CPU p50 %.2f ms, '
                'CPU p10 %.2f ms', args.points, fitted, args.objects, wall_ms, cpu_ms, cpu_low_ms)
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
