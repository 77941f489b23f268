"""
Choose the node's placement settings on validation objects: the node's pipeline on demo-like scenes, per category.

``make demo`` plays test-split objects, so its numbers are for reporting only. This renders the same kind of scenes
(``demo.scenes``, the demo's camera and scene settings) from *validation*-split objects of the model's demo
categories, runs the node's pipeline on them in process (``config/reconstruct.yaml`` with depth and the fit on) and
prints, per category and for all, the centroid error in % of the camera distance, placed and centred CD-L1 and how
many objects the fit placed, for the default settings and for each ``--variant``: JSON of
:class:`PipelineSettings` fields, a nested object for a nested dataclass (``fit``, ``surface``, ``depth``).

    .venv/bin/python scripts/shape_fit_tuning.py --variant '{"box_aspect_weight": 1.0}' \
        --variant '{"fit": {"scale_range": [0.33, 3.0]}}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from mesc3d_ros.node_params import NodeParams
from mesc3d_ros.package_share import resolve_model
from mesc3d_ros.pipeline import PipelineSettings
from mesc3d_ros.ros_env import REPO_ROOT
from mesc3d_training.demo.publisher import demo_categories, load_demo_objects
from mesc3d_training.demo.report import score_object
from mesc3d_training.demo.scenes import SceneSequence, SceneSettings, load_sequence, render_sequence, save_sequence

LOGGER = logging.getLogger('shape_fit_tuning')
PARAMS_FILE = REPO_ROOT / 'config' / 'reconstruct.yaml'


def validation_scenes(path: Path, contract_path: Path, objects: int, scenes: int, seed: int) -> SceneSequence:
    """Render (once; then read ``path``) ``scenes`` demo scenes of ``objects`` validation-split objects."""
    if path.exists():
        return load_sequence(path)
    pool = load_demo_objects(demo_categories(contract_path), objects, seed, split='val')
    sequence = render_sequence(pool, SceneSettings(seed=seed), num_scenes=scenes, rate_hz=1.0, frames_per_scene=1,
                               num_frames=scenes)
    save_sequence(sequence, path)
    return sequence


def variant_settings(base: PipelineSettings, variant: str) -> PipelineSettings:
    """Return ``base`` with the fields of one ``--variant`` (JSON lists become tuples; an object sets a nested one)."""
    def replaced(settings, fields: dict):
        values = {}
        for key, value in fields.items():
            if isinstance(value, dict):
                value = replaced(getattr(settings, key), value)
            values[key] = tuple(value) if isinstance(value, list) else value
        return dataclasses.replace(settings, **values)

    return replaced(base, json.loads(variant))


def evaluate(sequence: SceneSequence, params: NodeParams, variant: str) -> dict[str, dict[str, float]]:
    """Per category (and ``all``): mean centroid error %, placed and centred CD-L1 (cm), F@1cm, share fitted."""
    pipeline, _ = params.open_pipeline()
    pipeline.settings = variant_settings(pipeline.settings, variant)
    rows: dict[str, list[tuple[float, float, float, bool, float]]] = defaultdict(list)
    for scene in sequence.scenes:
        depth = np.where(scene.depth_mm > 0, scene.depth_mm * 0.001, np.nan).astype(np.float32)  # (H, W) metres
        boxes = np.array([truth.box_xyxy for truth in scene.objects])
        names = [truth.category for truth in scene.objects]
        objects, _ = pipeline.process(scene.rgb, boxes, names, np.ones(len(boxes)), sequence.K, depth)
        for obj in objects:
            truth = scene.objects[obj.detection_index]
            metrics = score_object(obj.points, truth)
            row = (100 * metrics['centroid_error_m'] / metrics['distance_m'], metrics['cd_l1_m'],
                   metrics['cd_l1_centred_m'], obj.placement.mode == 'fit', metrics['fscores'][0])
            rows[truth.category].append(row)
            rows['all'].append(row)
    pipeline.close()
    pipeline.backend.close()
    return {category: {'objects': len(values), 'centroid_pct': float(np.mean([v[0] for v in values])),
                       'placed_cm': 100 * float(np.mean([v[1] for v in values])),
                       'centred_cm': 100 * float(np.mean([v[2] for v in values])),
                       'fitted': float(np.mean([v[3] for v in values])),
                       'f1cm': float(np.mean([v[4] for v in values]))}
            for category, values in sorted(rows.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--variant', action='append', default=[],
                        help='PipelineSettings fields as JSON, e.g. {"fit": {"trim_fraction": 0.7}} (repeatable)')
    parser.add_argument('--scenes-file', type=Path, default=REPO_ROOT / 'build' / 'val_scenes.npz')
    parser.add_argument('--objects', type=int, default=24, help='distinct validation objects')
    parser.add_argument('--scenes', type=int, default=40)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    values = yaml.safe_load(PARAMS_FILE.read_text())['/**']['ros__parameters']
    params = NodeParams.from_values({**values, 'use_depth': True, 'depth_fit': True})
    args.scenes_file.parent.mkdir(parents=True, exist_ok=True)
    sequence = validation_scenes(args.scenes_file, resolve_model(params.model_path), args.objects, args.scenes,
                                 args.seed)
    for variant in ['{}', *args.variant]:
        results = evaluate(sequence, params, variant)
        worst = max((r['centroid_pct'], c) for c, r in results.items() if c != 'all')
        every = results['all']
        LOGGER.info('%s: all centroid %.2f %%, placed %.2f cm, centred %.2f cm (%.2f x), F@1cm %.3f, fitted %.0f %%; '
                    'worst category %s %.1f %%', variant, every['centroid_pct'], every['placed_cm'],
                    every['centred_cm'], every['placed_cm'] / every['centred_cm'], every['f1cm'],
                    100 * every['fitted'], worst[1], worst[0])
        for category, result in results.items():
            LOGGER.info('  %-18s %3d objects  centroid %5.1f %%  placed %5.2f cm  centred %5.2f cm  F@1cm %.2f  fitted '
                        '%3.0f %%', category, result['objects'], result['centroid_pct'], result['placed_cm'],
                        result['centred_cm'], result['f1cm'], 100 * result['fitted'])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
