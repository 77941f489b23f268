"""
Measure the placement prior (geometry.PlacementPrior) and the placement error on rendered views of dataset objects.

For each view an object of the generated dataset's sources (training/data/sources.py) is rendered at a random
orientation, distance and off-axis direction by the dataset renderer, with metric z-depth quantised to millimetres
as the dataset stores it. From the mask's box and the depth this measures, per view:

- κ = D · sin α / r: how much of the bounding sphere's silhouette the box covers, and
- γ = (D − d_s) / (D · sin α): how many silhouette radii the centroid lies behind the median front-surface depth,

with D the true centroid distance, r the true radius (largest surface distance from the centroid), α the box's
half-angle and d_s the node's front-surface estimate (geometry.surface_distance). It then reports the centroid error
of geometry.place with the median κ, γ and with the sphere model (κ = γ = 1), in percent of the camera distance.

    .venv/bin/python scripts/placement_calibration.py --objects 40 --views 3
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from mesc3d_ros import geometry
from mesc3d_training.data.layout import DEPTH_UNIT_M
from mesc3d_training.data.render import ObjectRenderer
from mesc3d_training.data.sources import DegenerateMeshError, list_sources, load_object, sample_surface

LOGGER = logging.getLogger('placement_calibration')
IMAGE_SIZE = 480
FOCAL_PX = 450.0  # 56° field of view, a RealSense-like colour camera
DISTANCE_IN_RADII = (4.0, 12.0)  # the object fills 17-50 % of the image height
OFF_AXIS_RAD = 0.35


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation (3, 3) from a normalised Gaussian quaternion."""
    x, y, z, w = rng.normal(size=4)
    n = np.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def measure(num_objects: int, views: int, seed: int) -> list[dict]:
    """One record per usable view: object id, true distance and radius, κ, γ, box and surface distance."""
    rng = np.random.default_rng(seed)
    sources, _ = list_sources()
    chosen = rng.choice(len(sources), size=min(num_objects, len(sources)), replace=False)
    K = np.array([[FOCAL_PX, 0.0, (IMAGE_SIZE - 1) / 2], [0.0, FOCAL_PX, (IMAGE_SIZE - 1) / 2], [0.0, 0.0, 1.0]])
    renderer = ObjectRenderer(IMAGE_SIZE, scene_ranges=None)  # the object alone: only its mask and depth are used
    records = []
    try:
        for index in chosen:
            source = sources[index]
            try:
                loaded = load_object(source)
            except (DegenerateMeshError, OSError, ValueError) as exc:
                LOGGER.warning('skipping %s: %s', source.object_id, exc)
                continue
            points = sample_surface(loaded, 16384, seed=seed)  # (N, 3) metres, object frame
            centroid = points.mean(axis=0)
            radius = float(np.linalg.norm(points - centroid, axis=1).max())
            for _ in range(views):
                distance = radius * rng.uniform(*DISTANCE_IN_RADII)
                tx, ty = np.tan(rng.uniform(-OFF_AXIS_RAD, OFF_AXIS_RAD, size=2))
                centre = np.array([tx, ty, 1.0]) / np.linalg.norm([tx, ty, 1.0]) * distance  # (3,) optical frame
                rotation = random_rotation(rng)
                pose = np.eye(4)
                pose[:3, :3], pose[:3, 3] = rotation, centre - rotation @ centroid
                view = renderer.render_views(loaded, [(K, pose)], rng)[0]
                mask, depth = view['mask'], view['depth']
                rows, cols = np.nonzero(mask)
                box = np.array([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
                if box[0] < 0 or box[1] < 0 or box[2] > IMAGE_SIZE or box[3] > IMAGE_SIZE:
                    continue  # touches the border: the box would be clipped
                depth_m = (np.round(depth / DEPTH_UNIT_M) * DEPTH_UNIT_M).astype(np.float32)  # as stored (mm)
                view = geometry.box_view(K, box)
                surface = geometry.surface_distance(depth_m, box, view, geometry.DepthWindow())
                if surface is None:
                    continue
                sin_half = np.sin(view.half_angle)
                records.append({'object_id': source.object_id, 'category': source.category,
                                'distance_m': distance, 'radius_m': radius, 'centre': centre.tolist(),
                                'box': box.tolist(), 'surface_m': surface,
                                'kappa': distance * sin_half / radius,
                                'gamma': (distance - surface) / (distance * sin_half)})
    finally:
        renderer.close()
    return records


def placement_errors(records: list[dict], prior: geometry.PlacementPrior, use_depth: bool) -> np.ndarray:
    """Centroid error of geometry.place per view, as a fraction of the true distance."""
    K = np.array([[FOCAL_PX, 0.0, (IMAGE_SIZE - 1) / 2], [0.0, FOCAL_PX, (IMAGE_SIZE - 1) / 2], [0.0, 0.0, 1.0]])
    errors = []
    for record in records:
        placement = geometry.place(geometry.box_view(K, np.array(record['box'])), 2 * record['radius_m'],
                                   record['surface_m'] if use_depth else None, True, prior)
        errors.append(np.linalg.norm(placement.centre - np.array(record['centre'])) / record['distance_m'])
    return np.array(errors)


def summary(records: list[dict]) -> dict:
    kappa = np.array([r['kappa'] for r in records])
    gamma = np.array([r['gamma'] for r in records])
    fitted = geometry.PlacementPrior(box_fill=round(float(np.median(kappa)), 2),
                                     centre_offset=round(float(np.median(gamma)), 2))
    result = {'views': len(records), 'objects': len({r['object_id'] for r in records}),
              'kappa_p5_p25_p50_p75_p95': np.percentile(kappa, [5, 25, 50, 75, 95]).round(3).tolist(),
              'gamma_p5_p25_p50_p75_p95': np.percentile(gamma, [5, 25, 50, 75, 95]).round(3).tolist(),
              'fitted_prior': {'box_fill': fitted.box_fill, 'centre_offset': fitted.centre_offset},
              'default_prior': {'box_fill': geometry.PlacementPrior().box_fill,
                                'centre_offset': geometry.PlacementPrior().centre_offset}}
    for name, prior in (('default', geometry.PlacementPrior()), ('sphere', geometry.SPHERE)):
        for mode, use_depth in (('depth', True), ('size_prior', False)):
            errors = 100 * placement_errors(records, prior, use_depth)
            result[f'error_pct_{name}_{mode}_mean_p90_max'] = [round(float(errors.mean()), 2),
                                                               round(float(np.percentile(errors, 90)), 2),
                                                               round(float(errors.max()), 2)]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--objects', type=int, default=40)
    parser.add_argument('--views', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    result = summary(measure(args.objects, args.views, args.seed))
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
