"""
How well a generated dataset's clouds, cameras, masks and depth maps agree (``mesc3d dataset stats``).

Per view: the share of ground-truth points that project into the mask (and into the mask grown by one pixel, which
forgives rounding on thin parts), the IoU of the projected points' bounding box with the mask's, and, for the depth
map, the distance from each back-projected depth pixel to the nearest ground-truth point in units of the tolerance
(point spacing + half a depth count, in unit-ball units). ``check.py`` uses :func:`projected_on_mask`; the summary
over a dataset is what docs/data.md §8 reports.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree

from mesc3d_training.data import layout


def in_image(points_unit: np.ndarray, cams: layout.ObjectCameras, view: int, shape: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray]:
    """
    Project the points: (N, 2) rounded pixel coordinates, and (N,) bool.

    The bool is True for points in front of the camera and in the image.
    """
    uvw = cams.unit_ball_to_camera(points_unit, view) @ cams.K[view].T
    uv = np.round(uvw[:, :2] / np.maximum(uvw[:, 2:3], 1e-9)).astype(np.int64)
    height, width = shape
    inside = (uvw[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return uv, inside


def projected_on_mask(points_unit: np.ndarray, cams: layout.ObjectCameras, view: int, mask: np.ndarray) -> float:
    """
    Fraction of the unit-ball points projecting into the image whose pixel is on the (H, W) bool mask.

    Points outside the image (a view truncated at the border) are not counted: the mask cannot hold them.
    """
    uv, inside = in_image(points_unit, cams, view, mask.shape)
    if not inside.any():
        return 0.0
    return float(mask[uv[inside, 1], uv[inside, 0]].mean())


def grow(mask: np.ndarray) -> np.ndarray:
    """Return the mask dilated by one pixel (3 × 3)."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def box_iou(points_unit: np.ndarray, cams: layout.ObjectCameras, view: int, mask: np.ndarray) -> float:
    """Return the IoU of the projected points' bounding box with the mask's (pixel-edge boxes)."""
    uvw = cams.unit_ball_to_camera(points_unit, view) @ cams.K[view].T
    uv = uvw[:, :2] / uvw[:, 2:3]
    ys, xs = np.nonzero(mask)
    a = np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5])
    b = np.concatenate([uv.min(axis=0), uv.max(axis=0)])
    overlap = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return float(overlap / union)


def depth_to_surface(points_unit: np.ndarray, tree: cKDTree, cams: layout.ObjectCameras, view: int,
                     depth_m: np.ndarray) -> np.ndarray:
    """(P,) unit-ball distance from each depth pixel, back-projected through K and the pose, to the nearest point."""
    v, u = np.nonzero(depth_m > 0)
    z = depth_m[v, u]
    K, pose = cams.K[view], cams.T_cam_obj[view]
    camera = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)  # (P, 3) metres
    unit = ((camera - pose[:3, 3]) @ pose[:3, :3] - cams.centroid_m) / cams.scale_m
    return tree.query(unit)[0]


def point_spacing(tree: cKDTree, points_unit: np.ndarray) -> float:
    """Median distance from a ground-truth point to its nearest neighbour: the cloud's resolution."""
    return float(np.median(tree.query(points_unit, k=2)[0][:, 1]))


def dataset_alignment(root: str | Path, view_step: int = 6, depth_every: int = 10) -> dict:
    """Summary over views 0, view_step, … of every object; depth on view 0 of every ``depth_every``-th object."""
    root = Path(root)
    manifest = layout.read_manifest(root)
    on_mask, on_grown, ious, depth_median, depth_p95, worst = [], [], [], [], [], []
    for index, (object_id, entry) in enumerate(sorted(manifest['objects'].items())):
        category = entry['category']
        cams = layout.read_cameras(layout.cameras_path(root, category, object_id))
        points = np.load(layout.points_path(root, category, object_id)).astype(np.float64)
        for view in range(0, manifest['views'], view_step):
            mask = cv2.imread(str(layout.mask_path(root, category, object_id, view)), cv2.IMREAD_GRAYSCALE) > 127
            on_mask.append(projected_on_mask(points, cams, view, mask))
            on_grown.append(projected_on_mask(points, cams, view, grow(mask)))
            ious.append(box_iou(points, cams, view, mask))
            worst.append((on_grown[-1], ious[-1], object_id, view))
        if index % depth_every == 0:
            tree = cKDTree(points)
            depth_m = cv2.imread(str(layout.depth_path(root, category, object_id, 0)),
                                 cv2.IMREAD_UNCHANGED).astype(np.float64) * layout.DEPTH_UNIT_M
            tolerance = point_spacing(tree, points) + 0.5 * layout.DEPTH_UNIT_M / cams.scale_m
            distance = depth_to_surface(points, tree, cams, 0, depth_m) / tolerance
            depth_median.append(float(np.median(distance)))
            depth_p95.append(float(np.percentile(distance, 95)))

    def quantiles(values: list[float]) -> dict:
        return {name: round(float(np.percentile(values, q)), 4)
                for name, q in (('min', 0), ('q01', 1), ('q05', 5), ('median', 50))} | {
            'mean': round(float(np.mean(values)), 4)}

    return {
        'views': len(on_mask), 'objects': len(manifest['objects']),
        'on_mask': quantiles(on_mask) | {'share_ge_0.95': round(float(np.mean(np.array(on_mask) >= 0.95)), 4)},
        'on_grown_mask': quantiles(on_grown),
        'box_iou': quantiles(ious),
        'depth_objects': len(depth_median),
        'depth_median_over_tolerance': quantiles(depth_median) | {'max': round(max(depth_median), 3)},
        'depth_p95_over_tolerance': quantiles(depth_p95) | {'max': round(max(depth_p95), 3)},
        'worst_on_grown_mask': [f'{o} view {v}: {f:.3f}' for f, _, o, v in sorted(worst)[:3]],
        'worst_box_iou': [f'{o} view {v}: {i:.3f}' for _, i, o, v in sorted(worst, key=lambda w: w[1])[:3]],
    }
