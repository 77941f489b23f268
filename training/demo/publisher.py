"""
Scene publisher: test-split objects on a table, played as a live RGB-D camera with ground-truth detections.

The demo's stand-in for a camera driver and a detector. It picks test-split objects (never seen in training) of the
model's classes, pre-renders the scenes (``scenes.py``, so the stream is not limited by rendering speed) and
streams them at ``rate_hz``, a new scene every ``frames_per_scene`` frames, like a camera watching a table that
changes every second or so:

- ``image``        sensor_msgs/Image rgb8
- ``depth``        sensor_msgs/Image 16UC1, millimetres, registered to the colour image, 0 = no reading
- ``camera_info``  sensor_msgs/CameraInfo (plumb_bob, no distortion)
- ``detections``   vision_msgs/Detection2DArray: one detection per object, the box around its visible mask,
  ``class_id`` = the object's category, ``id`` = the object id; score 1.

Every message of a frame carries the same stamp (the wall-clock publish time) and frame id, as a detector that copies
its image header would. The ground truth is saved with the rendered frames before streaming starts
(``scenes.save_sequence``), and the stamp of every published frame is written when streaming ends, so a
recorder can match the node's outputs to frames and score them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from mesc3d_ros.conversions import CameraIntrinsics, arrays_to_detections, intrinsics_to_camera_info, numpy_to_image
from mesc3d_training.data.categories import SHAPE_CATEGORY, SplitMember, assign_splits
from mesc3d_training.data.sources import (DegenerateMeshError, MeshSource, list_sources, load_object, mesh_digests,
                                          sample_surface)
from mesc3d_training.demo.scenes import (DemoObject, SceneSequence, SceneSettings, load_sequence, render_sequence,
                                         save_sequence)

LOGGER = logging.getLogger(__name__)


# ---- which objects ------------------------------------------------------------------------------------------------

NOT_DEMO_CATEGORIES = ('shape', 'other')
"""Procedural blobs and the catch-all class: nothing a viewer can recognise."""
GT_POINTS = 2048
"""Surface samples per object: the ground truth the demo scores the placed clouds against."""


def sources_in_split(categories: set[str], split: str = 'test') -> list[MeshSource]:
    """
    List the ``split`` objects of ``categories`` (``test``, or ``val`` to tune on): the data module's by-object split.

    The split is computed from the packaged catalogs (a fresh clone has no dataset folder). It equals the dataset
    manifest's split whenever every mesh of the category rendered there.
    """
    kinds = ('sh3d', 'pybullet', 'random') if SHAPE_CATEGORY in categories else ('sh3d', 'pybullet')
    sources = [source for source in list_sources(kinds)[0] if source.category in categories]
    digests = mesh_digests(sources)
    assigned = assign_splits(SplitMember(s.object_id, s.category, digests[s.object_id]) for s in sources)
    return [source for source in sources if assigned[source.object_id] == split]


def load_demo_objects(categories: set[str], count: int, seed: int, split: str = 'test') -> list[DemoObject]:
    """Up to ``count`` objects of ``split``, taken round-robin over ``categories`` in a seeded order."""
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[MeshSource]] = {}
    for source in sources_in_split(categories, split):
        by_category.setdefault(source.category, []).append(source)
    if not by_category:
        raise ValueError(f'no {split}-split objects in categories {sorted(categories)}')
    queues = [list(rng.permutation(np.array(members, dtype=object))) for _, members in sorted(by_category.items())]
    objects = []
    while len(objects) < count and any(queues):
        for queue in queues:
            if not queue or len(objects) == count:
                continue
            source = queue.pop()
            try:
                loaded = load_object(source)
            except DegenerateMeshError as exc:
                LOGGER.warning('skipping %s: %s', source.object_id, exc)
                continue
            points = sample_surface(loaded, GT_POINTS, seed=seed).astype(np.float32)  # (M, 3) metres, object frame
            objects.append(DemoObject(source.category, source.object_id, loaded.meshes, points))
    LOGGER.info('playing %d %s-split objects: %s', len(objects), split,
                ', '.join(f'{obj.object_id} ({obj.category})' for obj in objects))
    return objects


# ---- streaming ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Topics:
    """Where the stream goes: the names a RealSense driver and a detector would use."""

    image: str = '/camera/color/image_raw'
    depth: str = '/camera/aligned_depth_to_color/image_raw'
    camera_info: str = '/camera/color/camera_info'
    detections: str = '/detections'
    frame_id: str = 'camera_color_optical_frame'


def frame_messages(sequence: SceneSequence, frame: int, header):
    """(image, depth, camera_info, detections) messages of ``frame``, all with ``header``."""
    scene = sequence.scenes[sequence.scene_index(frame)]
    height, width = scene.depth_mm.shape
    boxes = np.array([truth.box_xyxy for truth in scene.objects]).reshape(-1, 4)
    return (numpy_to_image(scene.rgb, 'rgb8', header),
            numpy_to_image(scene.depth_mm, '16UC1', header),
            intrinsics_to_camera_info(CameraIntrinsics(k=sequence.K, width=width, height=height), header),
            arrays_to_detections(boxes, [truth.category for truth in scene.objects], np.ones(len(boxes)), header,
                                 ids=[truth.object_id for truth in scene.objects]))


def stream(sequence: SceneSequence, topics: Topics, wait_for_nodes: tuple[str, ...], stamps_path: Path,
           wait_timeout_s: float) -> int:
    """
    Publish every frame of ``sequence`` at its rate once ``wait_for_nodes`` subscribe; return frames sent.

    The stamp of each published frame goes to ``stamps_path`` (JSON, written at the end, also when interrupted).
    """
    rclpy.init()
    node = rclpy.create_node('mesc3d_scene_publisher')
    # Reliable like a camera driver (REP-2003); best-effort subscribers (the node's default) still match.
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publishers = [node.create_publisher(Image, topics.image, qos), node.create_publisher(Image, topics.depth, qos),
                  node.create_publisher(CameraInfo, topics.camera_info, qos),
                  node.create_publisher(Detection2DArray, topics.detections, qos)]
    sent: list[dict] = []
    try:
        _wait_for_subscribers(node, (topics.image, topics.detections), wait_for_nodes, wait_timeout_s)
        LOGGER.info('streaming %d frames at %.1f Hz (%d scenes) on %s', sequence.num_frames, sequence.rate_hz,
                    len(sequence.scenes), topics.image)
        period_s, start = 1.0 / sequence.rate_hz, time.monotonic()
        for frame in range(sequence.num_frames):
            if not rclpy.ok():  # SIGINT/SIGTERM: rclpy's handler shut the context down
                break
            # Absolute schedule: a late frame does not delay the ones after it.
            time.sleep(max(0.0, start + frame * period_s - time.monotonic()))
            stamp = node.get_clock().now()
            header = Header(stamp=stamp.to_msg(), frame_id=topics.frame_id)
            for publisher, message in zip(publishers, frame_messages(sequence, frame, header)):
                publisher.publish(message)
            sent.append({'frame': frame, 'scene': sequence.scene_index(frame), 'stamp_ns': stamp.nanoseconds})
    except (KeyboardInterrupt, ExternalShutdownException):
        LOGGER.info('interrupted after %d frames', len(sent))
    finally:
        tmp = stamps_path.with_name(stamps_path.name + '.tmp')
        tmp.write_text(json.dumps({'rate_hz': sequence.rate_hz, 'frames': sent}))
        tmp.replace(stamps_path)
        node.destroy_node()
        rclpy.try_shutdown()
    return len(sent)


def _wait_for_subscribers(node, topic_names: tuple[str, ...], node_names: tuple[str, ...], timeout_s: float) -> None:
    """Block until every node in ``node_names`` subscribes to every topic; frames sent earlier would be lost."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [(name, topic) for topic in topic_names for name in node_names
                   if name not in {info.node_name for info in node.get_subscriptions_info_by_topic(topic)}]
        if not missing or not rclpy.ok():
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f'no subscription after {timeout_s} s from (node, topic) {missing}')
        time.sleep(0.05)
    # Discovery (the graph) runs slightly ahead of the writer-reader match; a short grace avoids losing frame 0.
    time.sleep(0.5)


# ---- command line -------------------------------------------------------------------------------------------------

def demo_categories(contract_path: Path) -> set[str]:
    """Return the model's classes worth showing: its class table minus held-out (zero-shot) and unrecognisable ones."""
    from mesc3d_ros.contract import load_contract

    contract = load_contract(contract_path)
    held_out = set(contract.config.get('data', {}).get('held_out_categories', ()))
    return set(contract.class_names) - held_out - set(NOT_DEMO_CATEGORIES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m mesc3d_training.demo.publisher',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('--model', type=Path, help='model contract JSON: play test objects of its classes')
    parser.add_argument('--categories', default='', help="comma-separated categories instead of the model's")
    parser.add_argument('--scenes', type=Path, required=True,
                        help='ground-truth file: written after rendering, or played as is with --replay')
    parser.add_argument('--replay', action='store_true', help='stream --scenes as saved instead of rendering')
    parser.add_argument('--stamps-out', type=Path, required=True, help="JSON of every published frame's stamp")
    parser.add_argument('--duration-s', type=float, default=20.0)
    parser.add_argument('--rate-hz', type=float, default=15.0)
    parser.add_argument('--frames-per-scene', type=int, default=10)
    parser.add_argument('--objects', type=int, default=12, help='distinct test objects to play')
    parser.add_argument('--min-per-scene', type=int, default=1)
    parser.add_argument('--max-per-scene', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--wait-for', action='append', default=[], metavar='NODE',
                        help='start streaming once this node subscribes to image and detections (repeatable)')
    parser.add_argument('--wait-timeout-s', type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.replay:
        sequence = load_sequence(args.scenes)
    else:
        if bool(args.model) == bool(args.categories):
            parser.error('give exactly one of --model and --categories')
        categories = ({c.strip() for c in args.categories.split(',') if c.strip()} if args.categories
                      else demo_categories(args.model))
        num_frames = max(1, round(args.duration_s * args.rate_hz))
        settings = SceneSettings(min_objects=args.min_per_scene, max_objects=args.max_per_scene, seed=args.seed)
        started = time.monotonic()
        pool = load_demo_objects(categories, args.objects, args.seed)
        sequence = render_sequence(pool, settings, num_scenes=-(-num_frames // args.frames_per_scene),
                                   rate_hz=args.rate_hz, frames_per_scene=args.frames_per_scene, num_frames=num_frames)
        save_sequence(sequence, args.scenes)
        LOGGER.info('rendered %d scenes in %.1f s -> %s', len(sequence.scenes), time.monotonic() - started,
                    args.scenes)
    sent = stream(sequence, Topics(), tuple(args.wait_for), args.stamps_out, args.wait_timeout_s)
    return 0 if sent == sequence.num_frames else 1


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # while rendering (streaming handles its own interruption)
        sys.exit(130)
