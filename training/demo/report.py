"""
Scoring and reporting of a demo run: match the node's outputs to frames, measure them against ground truth.

Matching: a cloud belongs to the frame whose published stamp equals its header stamp (the node copies the image
header); its points carry ``object_index``, the index of the object in the same-stamp Detection3DArray, whose
``id`` is the detection id the scene publisher set: the ground-truth object id.

Metrics, all in metres in the camera optical frame (the placed cloud against the object's whole surface, hidden
sides included, so placement and shape errors both count):

- CD-L1 = ½ (mean over GT points of the distance to the nearest predicted point + the converse), ``metrics.py``;
  also after moving the prediction onto the ground-truth centroid ("centred": the shape error without the
  placement error), and as a percentage of the object's bounding-sphere diameter (small and large objects on one
  scale);
- F-score at :data:`F_THRESHOLDS_M` (Euclidean, precision and recall counted at distance < t);
- centroid error = distance between the mean predicted point and the mean ground-truth point, also as a
  percentage of the object's distance from the camera.

Every distinct view (scene × object) counts once: the frames repeating a scene are averaged first.

The demo runs the node three times on one stream (``demo.VARIANTS``: shape fit, no fit, ``fused`` cloud);
:func:`compare` scores them on the scenes all three answered. The stream repeats each rendered scene for several
frames (identical image, depth and boxes), so an answer to any frame of a scene is an answer to the same input: on a
loaded CPU the three nodes rarely answer the very same frame, but always the same scenes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import PointCloud2
from vision_msgs.msg import Detection3DArray

from mesc3d_ros.conversions import cloud_to_structured, stamp_to_ns
from mesc3d_training.demo.recorder import Recording
from mesc3d_training.metrics import chamfer_l1, fscore, nearest_squared_distances
from mesc3d_training.demo.scenes import ObjectTruth, SceneSequence

F_THRESHOLDS_M = (0.01, 0.05)
"""1 cm: tight for a placed cloud (a grasp's tolerance on a mug); 5 cm: the object is where it should be."""
POINTS_TOPIC, OBJECTS_TOPIC, DIAGNOSTICS_TOPIC = '/mesc3d/points', '/mesc3d/objects', '/diagnostics'


@dataclass(frozen=True, eq=False)
class ObjectResult:
    frame: int
    scene: int
    truth: ObjectTruth
    model_class: str
    """The class the node reported for it (the detector's class id)."""
    points: np.ndarray
    """(N, 3) float32 metres, camera optical frame: what the node published for this object."""
    cd_l1_m: float
    cd_l1_centred_m: float
    """CD-L1 after translating the prediction onto the ground-truth centroid."""
    fscores: tuple[float, ...]
    """F-score at each of :data:`F_THRESHOLDS_M`."""
    centroid_error_m: float
    distance_m: float
    """Camera to the ground-truth centroid."""
    diameter_m: float
    """Ground-truth bounding-sphere diameter about its bounding-box centre."""


@dataclass(frozen=True, eq=False)
class FrameResult:
    frame: int
    scene: int
    stamp_ns: int
    latency_ms: float
    """Cloud receive time − image stamp: camera frame out → cloud in, through DDS and the node."""
    objects: tuple[ObjectResult, ...]
    unmatched_objects: int
    """Objects in the cloud whose id names no ground-truth object of the frame."""


@dataclass(frozen=True, eq=False)
class RunResult:
    frames_sent: int
    clouds_received: int
    clouds_unmatched: int
    """Clouds whose stamp is not a published frame's (should be 0)."""
    empty_clouds: int
    frames: tuple[FrameResult, ...]
    diagnostics: dict[str, str]
    """Key/values of the node's last /diagnostics status."""

    @property
    def objects(self) -> list[ObjectResult]:
        return [obj for frame in self.frames for obj in frame.objects]


def score_object(points: np.ndarray, truth: ObjectTruth) -> dict[str, float | tuple[float, ...]]:
    """Return the metric fields of :class:`ObjectResult` for one placed (N, 3) cloud against its ground truth."""
    gt_points = np.ascontiguousarray(truth.points_cam, dtype=np.float32)  # (M, 3) metres, optical frame
    centre = gt_points.mean(axis=0)
    offset = points.mean(axis=0) - centre
    gt = torch.from_numpy(gt_points)[None]  # (1, M, 3)
    placed = nearest_squared_distances(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))[None], gt)
    centred = nearest_squared_distances(torch.from_numpy((points - offset).astype(np.float32))[None], gt)
    low, high = gt_points.min(axis=0), gt_points.max(axis=0)
    return {'cd_l1_m': float(chamfer_l1(placed)[0]), 'cd_l1_centred_m': float(chamfer_l1(centred)[0]),
            'fscores': tuple(float(fscore(placed, t * t)[0]) for t in F_THRESHOLDS_M),  # fscore: squared threshold
            'centroid_error_m': float(np.linalg.norm(offset)), 'distance_m': float(np.linalg.norm(centre)),
            'diameter_m': 2.0 * float(np.linalg.norm(gt_points - (low + high) / 2, axis=1).max())}


def evaluate(sequence: SceneSequence, sent: list[dict], recording: Recording, points_topic: str = POINTS_TOPIC,
             objects_topic: str = OBJECTS_TOPIC, diagnostics_topic: str = DIAGNOSTICS_TOPIC) -> RunResult:
    """Match every received cloud to its frame and score its objects; ``sent`` is the publisher's stamps log."""
    frame_of_stamp = {entry['stamp_ns']: entry for entry in sent}
    objects_by_stamp = {}
    for received in recording.outputs[objects_topic]:
        message = deserialize_message(received.data, Detection3DArray)
        objects_by_stamp[stamp_to_ns(message.header.stamp)] = message
    frames, unmatched, empty = [], 0, 0
    for received in recording.outputs[points_topic]:
        cloud = deserialize_message(received.data, PointCloud2)
        stamp = stamp_to_ns(cloud.header.stamp)
        entry = frame_of_stamp.get(stamp)
        if entry is None:
            unmatched += 1
            continue
        table = cloud_to_structured(cloud)
        if table.size == 0:
            empty += 1
        scene = sequence.scenes[entry['scene']]
        truth_by_id = {truth.object_id: truth for truth in scene.objects}
        detections = objects_by_stamp.get(stamp)
        results, missing = [], 0
        xyz = np.stack([table['x'], table['y'], table['z']], axis=1).astype(np.float32)  # (P, 3) metres
        for index in np.unique(table['object_index']) if table.size else ():
            detection = detections.detections[index] if detections and index < len(detections.detections) else None
            truth = truth_by_id.get(detection.id) if detection is not None else None
            if truth is None:
                missing += 1
                continue
            points = xyz[table['object_index'] == index]
            model_class = detection.results[0].hypothesis.class_id if detection.results else ''
            results.append(ObjectResult(frame=entry['frame'], scene=entry['scene'], truth=truth,
                                        model_class=model_class, points=points, **score_object(points, truth)))
        frames.append(FrameResult(entry['frame'], entry['scene'], stamp, (received.receive_ns - stamp) / 1e6,
                                  tuple(results), missing))
    diagnostics = {}
    if recording.outputs.get(diagnostics_topic):
        message = deserialize_message(recording.outputs[diagnostics_topic][-1].data, DiagnosticArray)
        diagnostics = {kv.key: kv.value for status in message.status for kv in status.values}
    return RunResult(frames_sent=len(sent), clouds_received=len(recording.outputs[points_topic]),
                     clouds_unmatched=unmatched, empty_clouds=empty, frames=tuple(frames), diagnostics=diagnostics)


def per_view(objects: list[ObjectResult]) -> dict[tuple[int, str], dict[str, float]]:
    """(scene, object id) -> metrics averaged over the frames that showed that view."""
    groups: dict[tuple[int, str], list[ObjectResult]] = defaultdict(list)
    for obj in objects:
        groups[(obj.scene, obj.truth.object_id)].append(obj)
    views = {}
    for key, members in groups.items():
        views[key] = {'category': members[0].truth.category,
                      'cd_l1_m': float(np.mean([m.cd_l1_m for m in members])),
                      'cd_l1_centred_m': float(np.mean([m.cd_l1_centred_m for m in members])),
                      'cd_l1_pct_diameter': float(np.mean([100 * m.cd_l1_m / m.diameter_m for m in members])),
                      **{f'fscore_{round(t * 100)}cm': float(np.mean([m.fscores[i] for m in members]))
                         for i, t in enumerate(F_THRESHOLDS_M)},
                      'centroid_error_m': float(np.mean([m.centroid_error_m for m in members])),
                      'centroid_error_pct': float(np.mean([100 * m.centroid_error_m / m.distance_m for m in members])),
                      'distance_m': float(np.mean([m.distance_m for m in members])),
                      'frames': len(members)}
    return views


def _mean_rows(views: list[dict]) -> dict[str, float]:
    keys = [key for key in views[0] if key not in ('category', 'frames')]
    return {'views': len(views), **{key: float(np.mean([view[key] for view in views])) for key in keys}}


def summarise(run: RunResult, context: dict) -> dict:
    """Return the summary.json content: counts, latency percentiles, metrics per category and overall, ``context``."""
    latencies = np.array([frame.latency_ms for frame in run.frames])
    views = per_view(run.objects)
    by_category: dict[str, list[dict]] = defaultdict(list)
    for view in views.values():
        by_category[view['category']].append(view)
    matched = len(run.frames)
    return {
        **context,
        'frames_sent': run.frames_sent,
        'clouds_received': run.clouds_received,
        'clouds_matched': matched,
        'clouds_unmatched': run.clouds_unmatched,
        'empty_clouds': run.empty_clouds,
        'frames_dropped': run.frames_sent - matched,
        'objects_reconstructed': len(run.objects),
        'objects_unmatched': sum(frame.unmatched_objects for frame in run.frames),
        'latency_ms': ({'p50': float(np.percentile(latencies, 50)), 'p95': float(np.percentile(latencies, 95)),
                        'max': float(latencies.max()), 'mean': float(latencies.mean())} if matched else {}),
        'fscore_thresholds_m': list(F_THRESHOLDS_M),
        'metrics_note': 'metres, camera optical frame, placed cloud vs the whole GT surface; each distinct view '
                        '(scene x object) counts once',
        'metrics': _mean_rows(list(views.values())) if views else {},
        'metrics_per_category': {category: _mean_rows(rows) for category, rows in sorted(by_category.items())},
        'views': [{'scene': scene, 'object_id': object_id, **view}
                  for (scene, object_id), view in sorted(views.items())],
        'node_diagnostics': run.diagnostics,
    }


COMPARED = ('cd_l1_m', 'cd_l1_centred_m', 'fscore_1cm', 'centroid_error_pct')
"""The metrics :func:`compare` reports per node variant."""


def compare(runs: dict[str, RunResult]) -> dict:
    """
    Compare variants: per variant, overall and per category, :data:`COMPARED` and placed / centred CD-L1.

    Only the scenes every variant answered count (each view once, as in :func:`summarise`).
    """
    common = set.intersection(*({frame.scene for frame in run.frames} for run in runs.values()))
    result = {'scenes': len(common), 'variants': {}}
    for name, run in runs.items():
        views = list(per_view([obj for frame in run.frames if frame.scene in common for obj in frame.objects])
                     .values())
        rows = {'all': views, **{category: [v for v in views if v['category'] == category]
                                 for category in sorted({v['category'] for v in views})}}
        result['variants'][name] = {
            category: {'views': len(members), **{key: float(np.mean([v[key] for v in members])) for key in COMPARED},
                       'placed_over_centred': float(np.mean([v['cd_l1_m'] for v in members])
                                                    / np.mean([v['cd_l1_centred_m'] for v in members]))}
            for category, members in rows.items() if members}
    return result


def format_comparison(comparison: dict) -> list[str]:
    """Format the with/without-fit table: a row per category, each variant's placed/centred CD-L1, F@1cm, centroid %."""
    variants = comparison['variants']
    if not comparison['scenes'] or not all(variants.values()):
        return ['', '  comparison: no scene was answered by every node instance']
    names = list(variants)
    lines = ['', f'  Same {comparison["scenes"]} scenes (same images, depth and boxes), answered by every node '
             f'instance: ' + ', '.join(names),
             '  (CD-L1 placed / centred [cm], placed ÷ centred, F@1cm, centroid err % dist.)']
    header = f'  {"category":<18}' + ''.join(f'{name:>32}' for name in names)
    lines += [header, '  ' + '-' * (len(header) - 2)]
    for category in variants[names[0]]:
        cells = []
        for name in names:
            row = variants[name].get(category)
            cells.append(f'{"-":>32}' if row is None else
                         f'{100 * row["cd_l1_m"]:>7.1f} /{100 * row["cd_l1_centred_m"]:>5.1f}'
                         f'{row["placed_over_centred"]:>6.2f}x{row["fscore_1cm"]:>6.2f}'
                         f'{row["centroid_error_pct"]:>6.1f}%')
        lines.append(f'  {category:<18}' + ''.join(cells))
    return lines


def format_table(summary: dict) -> str:
    """Format the console table of a summary (plain text, fixed-width columns)."""
    latency = summary['latency_ms']
    sent = summary['frames_sent']
    lines = [
        f'mesc3d demo: model {summary["model"]["name"]} ({summary["model"].get("backend", "?")}), '
        f'{sent} frames at {summary["rate_hz"]:g} Hz, {summary["test_objects"]} test-split objects',
        f'  frames sent / clouds received    {sent} / {summary["clouds_received"]} '
        f'(matched to frames {summary["clouds_matched"]}, unmatched {summary["clouds_unmatched"]}, '
        f'empty {summary["empty_clouds"]})',
        f'  frames without a cloud (drops)   {summary["frames_dropped"]} '
        f'({100 * summary["frames_dropped"] / max(sent, 1):.0f} %; the node skips frames it cannot keep up with)',
        f'  objects reconstructed            {summary["objects_reconstructed"]} '
        f'(unmatched to ground truth {summary["objects_unmatched"]})',
    ]
    if latency:
        lines.append(f'  end-to-end latency p50 / p95     {latency["p50"]:.0f} / {latency["p95"]:.0f} ms '
                     '(image stamp -> cloud received)')
    node = summary['node_diagnostics']
    if node:
        placements = ', '.join(f'{key.removeprefix("placement_")} {value}' for key, value in sorted(node.items())
                               if key.startswith('placement_') and key != 'placement_policy')
        lines.append(f'  node (its last /diagnostics)     matched {node.get("total_matched", "?")} frames, processed '
                     f'{node.get("total_processed", "?")}, dropped as stale {node.get("total_dropped_stale", "0")}; '
                     f'placement: {placements or "none"}; processing mean/p95/max '
                     f'{node.get("processing_ms_mean_p95_max", "?")} ms')
    t1, t2 = (round(t * 100) for t in summary['fscore_thresholds_m'])
    header = f'  {"category":<18}{"views":>6}{"CD-L1 [m]":>11}{"centred":>9}{"% diam.":>9}{f"F@{t1}cm":>8}' \
             f'{f"F@{t2}cm":>8}{"centroid err [m]":>18}{"% dist.":>9}'
    lines += ['', header, '  ' + '-' * (len(header) - 2)]
    rows = list(summary['metrics_per_category'].items()) + ([('all', summary['metrics'])] if summary['metrics'] else [])
    for name, row in rows:
        lines.append(f'  {name:<18}{row["views"]:>6}{row["cd_l1_m"]:>11.4f}{row["cd_l1_centred_m"]:>9.4f}'
                     f'{row["cd_l1_pct_diameter"]:>8.1f}%{row[f"fscore_{t1}cm"]:>8.2f}{row[f"fscore_{t2}cm"]:>8.2f}'
                     f'{row["centroid_error_m"]:>18.4f}{row["centroid_error_pct"]:>8.1f}%')
    lines.append('  Metres, camera optical frame, placed cloud vs the whole ground-truth surface (hidden sides too);\n'
                 '  centred: CD-L1 with the prediction moved onto the ground-truth centroid (shape error only);\n'
                 "  % diam.: CD-L1 as a share of the object's bounding-sphere diameter;\n"
                 '  F@t: F-score, precision and recall counted at Euclidean distance < t; each view (scene x object)\n'
                 '  counts once.')
    if 'comparison' in summary:
        lines += format_comparison(summary['comparison'])
    return '\n'.join(lines)


def write_summary(summary: dict, path: Path) -> Path:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(path)
    return path
