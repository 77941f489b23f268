"""
``mesc3d dataset check``: find missing, corrupt and inconsistent files in a generated dataset.

Every problem is one line naming the file and what is wrong; the command exits non-zero when there is any. Checked:
the manifest and its hash; per object the cloud (present, loadable, (16384, 3) float32, finite, unit ball), the
camera file (views, finite K, proper rotations), the done marker, and per view the RGB, mask and depth PNGs (fully
decodable, so truncated files are caught; sizes; dtype; depth > 0 on the mask, within a tolerance; the cloud
projected through the stored camera lands on the mask); the splits (disjoint, complete, agreeing with the objects' own
split field); clouds the manifest does not list.

Depth and mask of datasets made elsewhere rarely agree to the pixel: an anti-aliased or dilated mask border has no
depth, and depth sensors leave holes. Mismatches on the mask's one-pixel border band are always accepted; elsewhere
up to ``depth_tolerance`` of the mask's pixels may be holes (mask without depth) or depth outside the mask. Our own
generator writes exact pairs, so its datasets pass with tolerance 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from mesc3d_training.data import layout
from mesc3d_training.data.alignment import grow, in_image, projected_on_mask
from mesc3d_training.data.categories import MANIFEST_SPLITS

UNIT_BALL_TOLERANCE = 1e-3
DEFAULT_DEPTH_TOLERANCE = 0.02
"""Share of a view's mask pixels, off the border band, allowed to disagree with depth > 0."""
MIN_IN_IMAGE = 0.25
"""A truncated view must still show this share of the cloud: less means a wrong camera, not a border crop."""
MIN_PROJECTED_ON_MASK = 0.8
"""Share of the cloud points inside the image that must land on the mask grown by one pixel. On the full dataset
the 1 % quantile is 0.999; sub-pixel wire structures that the rasteriser drops (a clothes horse's rods) reach 0.84;
a camera off by a few object radii puts most points off the mask (docs/data.md §8)."""


def _read_png(path: Path) -> np.ndarray:
    """Decode every byte: PIL's lazy open alone would not notice a truncated file."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(image)


def _check_points(path: Path, expected: int) -> Iterator[str]:
    try:
        points = np.load(path)
    except FileNotFoundError:
        yield f'{path}: missing point cloud'
        return
    except (OSError, ValueError) as exc:
        yield f'{path}: unreadable point cloud ({exc})'
        return
    if points.shape != (expected, 3) or points.dtype != np.float32:
        yield f'{path}: expected ({expected}, 3) float32, got {points.shape} {points.dtype}'
        return
    if not np.isfinite(points).all():
        yield f'{path}: {int((~np.isfinite(points)).any(axis=1).sum())} points are NaN or infinite'
        return
    radius = float(np.linalg.norm(points, axis=1).max())
    centre = float(np.linalg.norm(points.mean(axis=0)))
    if abs(radius - 1) > UNIT_BALL_TOLERANCE or centre > UNIT_BALL_TOLERANCE:
        yield f'{path}: not unit-ball normalised (max norm {radius:.4f}, centroid offset {centre:.4f})'


def _check_cameras(path: Path, views: int, image_size: int) -> Iterator[str]:
    try:
        cams = layout.read_cameras(path)
    except layout.LayoutError as exc:
        yield str(exc)
        return
    if cams.num_views != views or cams.image_size != image_size:
        yield f'{path}: {cams.num_views} views at {cams.image_size} px, the manifest says {views} at {image_size}'
    if not (np.isfinite(cams.K).all() and np.isfinite(cams.T_cam_obj).all()):
        yield f'{path}: non-finite intrinsics or poses'
        return
    rotations = cams.T_cam_obj[:, :3, :3]
    orthogonality = np.abs(rotations @ rotations.transpose(0, 2, 1) - np.eye(3)).max()
    if orthogonality > 1e-6 or np.abs(np.linalg.det(rotations) - 1).max() > 1e-6:
        yield f'{path}: a pose rotation is not a proper rotation (error {orthogonality:.2e})'


def depth_mask_disagreement(mask: np.ndarray, has_depth: np.ndarray) -> float:
    """Share of the mask's pixels where depth > 0 and the mask disagree, ignoring the mask's one-pixel border band."""
    kernel = np.ones((3, 3), np.uint8)
    border = (cv2.dilate(mask.astype(np.uint8), kernel) > 0) & ~(cv2.erode(mask.astype(np.uint8), kernel) > 0)
    return float(((mask != has_depth) & ~border).sum() / max(mask.sum(), 1))


def _check_view(root: Path, category: str, object_id: str, view: int, size: int,
                depth_tolerance: float) -> Iterator[str]:
    images = {}
    for kind, path_of in (('rgb', layout.rgb_path), ('mask', layout.mask_path), ('depth', layout.depth_path)):
        path = path_of(root, category, object_id, view)
        try:
            images[kind] = _read_png(path)
        except FileNotFoundError:
            yield f'{path}: missing {kind} image'
        except (OSError, SyntaxError, ValueError) as exc:
            yield f'{path}: corrupt or truncated {kind} PNG ({exc})'
    if len(images) < 3:
        return
    mask, depth = images['mask'], images['depth']
    expected = {'rgb': ((size, size, 3), np.uint8), 'mask': ((size, size), np.uint8),
                'depth': ((size, size), np.uint16)}
    for kind, (shape, dtype) in expected.items():
        if images[kind].shape != shape or images[kind].dtype != dtype:
            path = {'rgb': layout.rgb_path, 'mask': layout.mask_path, 'depth': layout.depth_path}[kind](
                root, category, object_id, view)
            yield f'{path}: expected {shape} {np.dtype(dtype).name}, got {images[kind].shape} {images[kind].dtype}'
            return
    if not (mask > 127).any():
        yield f'{layout.mask_path(root, category, object_id, view)}: empty mask'
    else:
        disagreement = depth_mask_disagreement(mask > 127, depth > 0)
        if disagreement > depth_tolerance:
            yield (f'{layout.depth_path(root, category, object_id, view)}: depth > 0 disagrees with the mask on '
                   f'{disagreement:.1%} of its pixels off the border (tolerance {depth_tolerance:.1%})')


def _check_alignment(root: Path, category: str, object_id: str, views: int) -> Iterator[str]:
    """Return the cloud, the cameras and the masks must agree: catches a wrong pose, scale or centroid."""
    try:
        cams = layout.read_cameras(layout.cameras_path(root, category, object_id))
        points = np.load(layout.points_path(root, category, object_id)).astype(np.float64)
    except (layout.LayoutError, OSError, ValueError):
        return  # already reported by the file checks
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        return
    for view in range(min(views, cams.num_views)):
        try:
            mask = _read_png(layout.mask_path(root, category, object_id, view)) > 127
        except (OSError, SyntaxError, ValueError):
            continue
        _, inside = in_image(points, cams, view, mask.shape)
        if inside.mean() < MIN_IN_IMAGE:
            yield (f'{layout.cameras_path(root, category, object_id)}: view {view}: only {inside.mean():.1%} of the '
                   f'cloud projects into the image (camera wrong?)')
            continue
        fraction = projected_on_mask(points, cams, view, grow(mask))
        if fraction < MIN_PROJECTED_ON_MASK:
            yield (f'{layout.cameras_path(root, category, object_id)}: view {view}: only {fraction:.1%} of the cloud '
                   f'projects onto the mask (camera, scale or centroid wrong?)')


def check_object(root: Path, object_id: str, entry: dict, manifest: dict,
                 depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE) -> list[str]:
    category = entry['category']
    problems = list(_check_points(layout.points_path(root, category, object_id),
                                  manifest.get('num_surface_points', layout.NUM_SURFACE_POINTS)))
    problems += _check_cameras(layout.cameras_path(root, category, object_id), manifest['views'],
                               manifest['image_size'])
    # done.json is our generator's completion marker; a dataset made elsewhere (no generator_version) has none.
    if 'generator_version' in manifest and not layout.done_path(root, category, object_id).is_file():
        problems.append(f'{layout.done_path(root, category, object_id)}: missing done marker (unfinished object)')
    for view in range(manifest['views']):
        problems += _check_view(root, category, object_id, view, manifest['image_size'], depth_tolerance)
    problems += _check_alignment(root, category, object_id, manifest['views'])
    return problems


def check_splits(manifest: dict) -> list[str]:
    problems = []
    where = layout.MANIFEST_FILE
    seen: dict[str, str] = {}
    for split in MANIFEST_SPLITS:
        for object_id in manifest['splits'].get(split, []):
            if object_id in seen:
                problems.append(f'{where}: object {object_id} is in both {seen[object_id]} and {split}')
            seen[object_id] = split
            entry = manifest['objects'].get(object_id)
            if entry is None:
                problems.append(f'{where}: split {split} lists unknown object {object_id}')
            elif entry['split'] != split:
                problems.append(f'{where}: object {object_id} says split {entry["split"]}, listed in {split}')
    problems += [f'{where}: object {i} is in no split' for i in sorted(set(manifest['objects']) - set(seen))]
    problems += [f'{where}: held-out category {c} has no objects' for c in manifest.get('held_out_categories', [])
                 if c not in manifest['categories']]
    return problems


def check_dataset(root: str | Path, progress: bool = False,
                  depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE) -> list[str]:
    """All problems found under ``root``; an empty list means the dataset is consistent."""
    root = Path(root)
    try:
        manifest = layout.read_manifest(root)
    except layout.LayoutError as exc:
        return [str(exc)]
    problems = check_splits(manifest)
    objects = manifest['objects']
    for object_id, entry in tqdm(sorted(objects.items()), unit='obj', desc='check', disable=not progress):
        problems += check_object(root, object_id, entry, manifest, depth_tolerance)
    for points_file in sorted((root / layout.POINTS_DIR).glob(f'*/*{layout.POINTS_SUFFIX}')):
        if points_file.name[:-len(layout.POINTS_SUFFIX)] not in objects:
            problems.append(f'{points_file}: object not listed in the manifest')
    return problems
