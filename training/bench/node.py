"""
Node benchmark: end-to-end latency of reconstruct_node (image in → cloud out) against the raw backend.

Method (ros2_benchmark style, docs/field.md §2): a publisher sends synthetic 640×480 rgb8 frames with camera_info and
1, 5 or 10 detection boxes at a fixed rate, stamped with the wall clock; the node runs as its own process over
loopback DDS (``mesc3d_ros.ros_env``); latency = arrival of the frame's cloud − its stamp, so it includes both DDS
hops, conversions, cropping, inference, placement and serialisation. Frames the node skips because a newer one
arrived while it was busy are drops. Each precision (``--precision fp32,int8``: the node's ``precision``
parameter) and object count is run at each camera rate (15 and 30 Hz). The node's CPU overhead is measured
in-process: its per-frame work (conversions, crops, placement, output messages) against the backend time of the
same frames, with a 16UC1 depth image (a ball in every box, a floor behind) so that the shape fit
(``mesc3d_ros.shape_fit``) is part of it, as on a camera with depth.

    python -m mesc3d_training.bench.node --model engines/model.json [--precision fp32,int8] [--out docs/benchmarks.md]

:func:`benchmark` and :func:`render_section` are what ``mesc3d bench`` can call.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mesc3d_ros import preprocess
from mesc3d_ros.contract import load_contract
from mesc3d_ros.inference import create_backend
from mesc3d_ros.ros_env import apply_ros_environment
from mesc3d_training.reports.markdown_blocks import replace_block

LOGGER = logging.getLogger(__name__)
WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
NAMESPACE = '/node_bench'
BLOCK, HEADING = 'bench:node', 'Node'


@dataclass(frozen=True)
class BackendTiming:
    precision: str
    objects: int
    batched_p50_ms: float
    """One backend call with all objects."""
    singles_p50_ms: float
    """One call per object, in sequence."""
    node_work_p50_ms: float
    """The node's own work per frame without the backend call and without DDS: message conversions, crops,
    placement and the output messages, measured in this process."""
    node_backend_p50_ms: float
    """The backend's share of those same frames: the overhead ratio compares numbers from one time window,
    which matters on a shared CPU whose speed changes from minute to minute."""


class TimedBackend:
    """Delegates to a real backend and records how long its calls took, to subtract them from a frame's time."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name, self.max_batch = backend.name, backend.max_batch
        self.seconds = 0.0

    def run(self, image: np.ndarray, class_embedding: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        points = self.backend.run(image, class_embedding)
        self.seconds += time.perf_counter() - start
        return points

    def close(self) -> None:
        self.backend.close()


@dataclass(frozen=True)
class NodeRun:
    objects: int
    rate_hz: float
    sent: int
    answered: int
    latency_p50_ms: float
    latency_p95_ms: float

    @property
    def dropped_pct(self) -> float:
        return 100.0 * (self.sent - self.answered) / max(self.sent, 1)


def synthetic_frame(objects: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 noise image and (objects, 4) xyxy boxes of 60-140 px spread over it."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    sizes = rng.uniform(60.0, 140.0, size=(objects, 2))
    corners = rng.uniform([0.0, 0.0], [WIDTH, HEIGHT], size=(objects, 2)) * (1 - sizes / [[WIDTH, HEIGHT]])
    return image, np.concatenate([corners, corners + sizes], axis=1)


def synthetic_depth(boxes: np.ndarray) -> np.ndarray:
    """
    Render (H, W) uint16 millimetre depth: a floor 3 m away tilted towards the camera, and a ball in every box.

    Each ball is inscribed in its box's smaller side at 1.5 m (ray-cast), so the node's shape fit has a surface to
    fit.
    """
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # (H, W, 3), z = 1
    depth = 3.0 / (0.6 + 0.4 * (HEIGHT - v) / HEIGHT)  # (H, W) metres: nearer towards the bottom
    for x0, y0, x1, y1 in boxes:
        centre = 1.5 * rays[int((y0 + y1) / 2), int((x0 + x1) / 2)]  # (3,) metres, optical frame
        radius = 1.5 * min(x1 - x0, y1 - y0) / 2 / K[0, 0]
        a = np.einsum('hwk,hwk->hw', rays, rays)
        b = rays @ centre
        disc = b * b - a * (centre @ centre - radius * radius)
        hit = disc >= 0
        depth = np.where(hit, np.minimum(depth, (b - np.sqrt(np.where(hit, disc, 0.0))) / a), depth)
    return np.round(depth * 1000.0).astype(np.uint16)


def time_backend(contract_path: Path, backend_kind: str, threads: int, precision: str, objects: int,
                 iterations: int) -> BackendTiming:
    """p50 of the batched call and of ``objects`` single calls, on the crops the node would make."""
    contract = load_contract(contract_path)
    backend = create_backend(contract_path, backend_kind, max_batch=max(objects, 1), threads=threads,
                             precision=precision)
    image, boxes = synthetic_frame(objects)
    crops = np.stack([preprocess.crop_and_resize(image, preprocess.square_window(box, contract.crop_padding),
                                                 contract.image_size) for box in boxes])  # (B, S, S, 3) uint8
    batch = preprocess.to_model_input(crops)  # (B, 3, S, S) float32
    embeddings = np.repeat(contract.embedding_table()[:1], objects, axis=0)  # (B, D)
    for _ in range(2):  # warm-up: first calls allocate
        backend.run(batch, embeddings)
    batched, singles = [], []
    for _ in range(iterations):
        start = time.perf_counter()
        backend.run(batch, embeddings)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        for index in range(objects):
            backend.run(batch[index:index + 1], embeddings[index:index + 1])
        singles.append(time.perf_counter() - start)
    work_ms, backend_ms = node_work(contract_path, TimedBackend(backend), image, boxes, iterations)
    return BackendTiming(precision, objects, 1e3 * float(np.median(batched)), 1e3 * float(np.median(singles)),
                         work_ms, backend_ms)


def node_work(contract_path: Path, backend: TimedBackend, image: np.ndarray, boxes: np.ndarray,
              iterations: int, depth_fit: bool = True) -> tuple[float, float]:
    """
    Time what ReconstructNode._process does per frame: p50 ms without the backend's share, and of that share.

    ``depth_fit`` False: with the depth image, but placed from box and median depth (the node's depth_fit: false).
    """
    from std_msgs.msg import Header

    from mesc3d_ros.conversions import CameraIntrinsics, arrays_to_detections, numpy_to_image
    from mesc3d_ros.frame_inputs import frame_inputs
    from mesc3d_ros.frame_slot import Frame
    from mesc3d_ros.object_messages import objects_to_messages
    from mesc3d_ros.pipeline import PipelineSettings, ReconstructionPipeline

    pipeline = ReconstructionPipeline(backend, load_contract(contract_path), PipelineSettings(depth_fit=depth_fit))
    header = Header(frame_id='bench_optical_frame')
    frame = Frame(image=numpy_to_image(image, 'rgb8', header),
                  detections=arrays_to_detections(boxes, ['object'] * len(boxes), np.ones(len(boxes)), header),
                  depth=numpy_to_image(synthetic_depth(boxes), '16UC1', header),
                  camera_info=CameraIntrinsics(k=K, width=WIDTH, height=HEIGHT), matched_s=0.0)
    work, inference = [], []
    for _ in range(iterations):
        backend.seconds = 0.0
        start = time.perf_counter()
        inputs, _ = frame_inputs(frame, 0.001)  # the node's worker, ReconstructNode._process, step by step
        objects, _ = pipeline.process(inputs.rgb, inputs.detections.boxes, inputs.detections.class_ids,
                                      inputs.detections.scores, inputs.intrinsics.k, inputs.depth)
        objects_to_messages(objects, inputs.detections.ids, header)
        work.append(time.perf_counter() - start - backend.seconds)
        inference.append(backend.seconds)
    pipeline.close()
    backend.close()
    return 1e3 * float(np.median(work)), 1e3 * float(np.median(inference))


def run_node(objects: int, rates_hz: tuple[float, ...], duration_s: float) -> list[NodeRun]:
    """Publish frames with ``objects`` boxes at each rate for ``duration_s`` to the node under NAMESPACE."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray

    from mesc3d_ros.conversions import (CameraIntrinsics, arrays_to_detections, intrinsics_to_camera_info,
                                        numpy_to_image, stamp_to_ns)

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('node_bench_camera', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    image, boxes = synthetic_frame(objects)
    arrivals: dict[int, float] = {}  # stamp ns -> arrival ns

    def on_cloud(msg: PointCloud2) -> None:
        arrivals.setdefault(stamp_to_ns(msg.header.stamp), time.time_ns())

    publishers = {'image': node.create_publisher(Image, f'{NAMESPACE}/image', 10),
                  'info': node.create_publisher(CameraInfo, f'{NAMESPACE}/camera_info', 10),
                  'detections': node.create_publisher(Detection2DArray, f'{NAMESPACE}/detections', 10)}
    node.create_subscription(PointCloud2, f'{NAMESPACE}/mesc3d/points', on_cloud, 10)

    def publish() -> int:
        now = time.time_ns()
        header = Header(frame_id='bench_optical_frame')
        header.stamp.sec, header.stamp.nanosec = divmod(now, 1_000_000_000)
        publishers['info'].publish(intrinsics_to_camera_info(CameraIntrinsics(k=K, width=WIDTH, height=HEIGHT),
                                                             header))
        publishers['image'].publish(numpy_to_image(image, 'rgb8', header))
        publishers['detections'].publish(arrays_to_detections(boxes, ['object'] * objects, np.ones(objects), header))
        return now

    def spin_for(seconds: float, rate_hz: float | None) -> list[int]:
        """Spin, publishing at ``rate_hz`` when given; the stamps sent."""
        sent, end = [], time.monotonic() + seconds
        next_due = time.monotonic()
        while time.monotonic() < end:
            if rate_hz is not None and time.monotonic() >= next_due:
                sent.append(publish())
                next_due += 1.0 / rate_hz
            executor.spin_once(timeout_sec=max(0.0, min(next_due - time.monotonic(), 0.01)))
        return sent

    try:
        deadline = time.monotonic() + 60.0
        while not arrivals:  # discovery and the node's first (slow) inference
            if time.monotonic() > deadline:
                raise TimeoutError(f'reconstruct_node under {NAMESPACE} did not answer within 60 s')
            spin_for(0.5, 2.0)
        runs = []
        for rate_hz in rates_hz:
            spin_for(1.0, None)  # let the previous run drain
            arrivals.clear()
            sent = spin_for(duration_s, rate_hz)
            spin_for(2.0, None)  # the last answers
            latencies = [arrivals[stamp] - stamp for stamp in sent if stamp in arrivals]
            p50, p95 = (np.percentile(latencies, [50, 95]) * 1e-6) if latencies else (np.nan, np.nan)
            runs.append(NodeRun(objects, rate_hz, len(sent), len(latencies), float(p50), float(p95)))
        return runs
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def benchmark(contract_path: Path, backend_kind: str = 'onnxruntime', threads: int = 0,
              precisions: tuple[str, ...] = ('fp32',), object_counts: tuple[int, ...] = (1, 5),
              rates_hz: tuple[float, ...] = (15.0, 30.0), duration_s: float = 10.0,
              iterations: int = 20) -> list[tuple[BackendTiming, list[NodeRun]]]:
    """Backend timings, then the node process at each of ``rates_hz``, per precision and object count."""
    apply_ros_environment()  # this process and the node: loopback DDS, same domain, logs in build/
    results = []
    for precision in precisions:
        for objects in object_counts:
            timing = time_backend(contract_path, backend_kind, threads, precision, objects, iterations)
            cmd = [sys.executable, '-m', 'mesc3d_ros.reconstruct_node', '--ros-args', '-r', f'__ns:={NAMESPACE}',
                   '-p', f'model_path:={contract_path}', '-p', f'backend:={backend_kind}', '-p',
                   f'cpu_threads:={threads}', '-p', f'precision:={precision}', '-p',
                   f'max_batch:={max(object_counts)}', '-p', 'placement:=size_prior']
            with tempfile.TemporaryFile() as log:
                node = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                try:
                    runs = run_node(objects, rates_hz, duration_s)
                except TimeoutError as exc:
                    log.seek(0)
                    exc.add_note(f'node output:\n{log.read().decode(errors="replace")}')
                    raise
                finally:
                    node.terminate()
                    node.wait(timeout=30)
            LOGGER.info('%s, %d object(s): backend %.1f ms batched, %.1f ms singles; node %s', precision, objects,
                        timing.batched_p50_ms, timing.singles_p50_ms, runs)
            results.append((timing, runs))
    return results


def render_section(results: list[tuple[BackendTiming, list[NodeRun]]], backend_name: str, model_note: str,
                   command: str, load: str) -> str:
    """Markdown for docs/benchmarks.md §Node."""
    cpu = platform.processor() or platform.machine()
    lines = [f'Measured {time.strftime("%Y-%m-%d")} with `{command}`.', '',
             f'- Machine: {cpu}, {len(os.sched_getaffinity(0))} usable cores, 1-min load average {load} (shared '
             f'machine); backend {backend_name}; node and publisher are two processes on loopback DDS (Fast DDS, '
             f'shared memory).',
             f'- Model: {model_note}. Frames: 640×480 rgb8 + camera_info + Detection2DArray, placement by size prior '
             'over DDS; the in-process node work also converts a 16UC1 depth image and fits every shape to it.',
             '- Backend: one call with all objects (batched) and one call per object (1-by-1), alternating, p50. '
             "Node work: the node's per-frame work without the backend call and without DDS (conversions, crops, "
             'placement with the shape fit to depth, output messages), p50, in-process, as a share of the backend '
             'time of the same frames.',
             '- Latency = cloud arrival − image stamp (p50 / p95) through both DDS hops; when the node cannot keep '
             'up it includes waiting for the busy worker. The last column is latency p50 − batched backend p50: '
             'transport, hand-over, waiting and node work, but also CPU contention between the two processes.',
             '', '| precision | objects | backend batched ms | backend 1-by-1 ms | batching gain | node work ms (of '
             'backend) | rate Hz | sent | answered % | dropped % | latency p50 ms | latency p95 ms | latency − '
             'backend ms |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for timing, runs in results:
        gain = timing.singles_p50_ms / timing.batched_p50_ms
        for run in runs:
            share = timing.node_work_p50_ms / timing.node_backend_p50_ms
            lines.append(f'| {timing.precision} | {run.objects} | {timing.batched_p50_ms:.1f} | '
                         f'{timing.singles_p50_ms:.1f} | {gain:.2f}× | {timing.node_work_p50_ms:.1f} '
                         f'({100 * share:.0f} %) | {run.rate_hz:.1f} | {run.sent} | {100 - run.dropped_pct:.0f} | '
                         f'{run.dropped_pct:.0f} | {run.latency_p50_ms:.1f} | {run.latency_p95_ms:.1f} | '
                         f'{run.latency_p50_ms - timing.batched_p50_ms:.1f} |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m mesc3d_training.bench.node',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('--model', type=Path, required=True, help='model contract JSON')
    parser.add_argument('--model-note', default='', help='what the model is, for the table (e.g. random weights)')
    parser.add_argument('--backend', default='onnxruntime', choices=('auto', 'tensorrt', 'onnxruntime'))
    parser.add_argument('--threads', type=int, default=0, help='ONNX Runtime intra-op threads (0 = one per core)')
    parser.add_argument('--precision', default='fp32,int8', help='comma-separated model precisions to run '
                        "(the node's precision parameter); each must be in the contract")
    parser.add_argument('--objects', default='1,5,10', help='comma-separated detections per frame')
    parser.add_argument('--rates-hz', default='15,30', help='comma-separated camera rates')
    parser.add_argument('--duration-s', type=float, default=10.0)
    parser.add_argument('--out', type=Path, help='markdown file whose "## Node" section is replaced')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    counts = tuple(int(count) for count in args.objects.split(','))
    precisions = tuple(args.precision.split(','))
    rates = tuple(float(rate) for rate in args.rates_hz.split(','))
    load_before = os.getloadavg()[0]
    results = benchmark(args.model, args.backend, args.threads, precisions, counts, rates, args.duration_s)
    load = f'{load_before:.1f} before, {os.getloadavg()[0]:.1f} after the run'
    backend_name = create_backend(args.model, args.backend, threads=args.threads, precision='fp32').name
    note = args.model_note or f'`{args.model.name}`'
    command = shlex.join(['python', '-m', 'mesc3d_training.bench.node', *(sys.argv[1:] if argv is None else argv)])
    body = render_section(results, backend_name.rsplit(' ', 1)[0], note, command, load)
    if args.out is not None:
        LOGGER.info('wrote %s', replace_block(args.out, BLOCK, body, HEADING))
    else:
        sys.stdout.write(body + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
