"""
The object's visible surface: the depth pixels inside a detection box that belong to the object, as 3D points.

A box holds more than its object: the floor seen between a chair's legs, the table under a mug, part of a
neighbour. Without a mask, the object is taken to be the *nearest dominant depth mode connected to the box centre*,
minus the surface it stands on:

1. the box is read at a stride that keeps at most ``max_pixels`` readings (a 400 px box is not 160,000 points);
2. invalid readings go: NaN, 0, outside [min_depth_m, max_depth_m], and *flying pixels*, readings that differ from
   both neighbours along a row or column by more than ``edge_jump_fraction`` of their depth (depth cameras
   interpolate across silhouettes);
3. the *support plane*: a detection box bounds the object's visible silhouette, so a ring of pixels just outside it
   sees what surrounds the object: the table or floor. A plane fitted to that ring (RANSAC, then least squares on
   its inliers) that holds at least ``plane_min_share`` of the ring's readings removes the box readings within
   ``plane_distance_fraction`` of their depth of it, or behind it: the table under a mug, the floor between legs;
4. the front depth z_f is the nearest histogram mode of the central region (``DepthWindow.roi_fraction``) holding
   at least ``mode_share`` of the largest mode's readings: a few near outliers are not a mode, the floor behind the
   object is a farther one;
5. readings within [z_f − r, z_f + 2 r] are kept, r being the radius the box allows at z_f (half the larger box side
   in metres, ÷ κ of the placement prior): nothing of the object lies farther than its diameter behind its front;
6. of those, only the 8-connected pixel regions that reach into the central region stay (a neighbour at the box
   edge is cut off at its depth step). When the central region holds too few readings of anything but the support
   (a frame-like object: the centre of a shower's frame or a folding chair sees the wall behind), the whole box
   takes its place in 4 and 6.

What remains can still hold a patch of a non-planar background; the shape fit (``shape_fit.py``) trims
points its predicted shape does not explain, which is the refinement by the predicted silhouette. Other detections'
boxes that a box's centre sees are cut out of it (:func:`occluding_boxes`), and :func:`seen_through` tells which
points the depth image shows to be free space.
All lengths in metres, points in the camera optical frame (x right, y down, z forward). Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mesc3d_ros.geometry import DepthWindow


@dataclass(frozen=True)
class SurfaceSettings:
    """
    How the visible surface is cut out of the box.

    The defaults hold for the demo's scenes and RealSense-like depth; they are not tuned per category.
    """

    max_pixels: int = 8192
    """Readings kept from one box (strided, ~90 × 90): bounded time for any box size. Measured on validation scenes
    (scripts/shape_fit_tuning.py): 8,192 instead of 4,096 raised the ``fused`` output's F@1cm from 0.33 to 0.37
    (its measured side is these readings) and left the fit as good (centroid 2.60 vs 2.69 %), for ~5-10 % more
    time per object; 16,384 gave 0.39 but a worse fused centroid (3.3 %). 2,048 cost the synthetic cuboid's fitted
    scale 1 % on average, 3 % at worst (coarser rims)."""
    max_points: int = 400
    """Visible points the fit matches (evenly subsampled): its cost grows with them, its accuracy barely (all
    readings instead: the same placement on the validation scenes)."""
    edge_jump_fraction: float = 0.03
    """A reading differing from both row (or both column) neighbours by more than this share of its depth is a
    flying pixel."""
    mode_bin_fraction: float = 0.02
    """Histogram bin width of the front-depth search, as a share of the median depth (2 cm at 1 m)."""
    mode_share: float = 0.25
    """A histogram mode counts when it holds at least this share of the largest mode's readings."""
    min_points: int = 30
    """Fewer surface points than this: no visible surface (the caller falls back to the box placement)."""
    ring_fraction: float = 0.15
    """Width of the ring around the box that sees the support, as a share of the larger box side (≥ 3 px)."""
    plane_distance_fraction: float = 0.008
    """Readings nearer than this share of their depth to the support plane belong to it (1.5 cm at 1 m)."""
    plane_min_share: float = 0.4
    """The ring's best plane must hold this share of its readings, else there is no support plane."""
    plane_hypotheses: int = 32
    """RANSAC hypotheses (fixed seed: the same frame gives the same surface)."""
    min_own_share: float = 0.3
    """Another detection's box is excluded from this one's only when this share of its area stays its own
    (:func:`occluding_boxes`)."""


@dataclass(frozen=True, eq=False)
class VisibleSurface:
    """The object's measured front surface."""

    points: np.ndarray
    """(P, 3) float64 metres, camera optical frame: back-projected depth readings of the object, at most
    ``max_points`` of them evenly spread over ``all_points`` (what the shape fit matches)."""
    front_depth_m: float
    """z_f: z-depth of the nearest dominant mode in the box centre."""
    front_uv: np.ndarray
    """(S, 2) pixel coordinates (u, v) of the central readings at z_f: where the box sees its front (which other
    detections' boxes may claim, :func:`occluding_boxes`)."""
    all_points: np.ndarray
    """(R, 3) every reading of the object that the strided box holds (≤ ``max_pixels``): the measured side of the
    ``fused`` output, as dense as the box's stride allows."""


def _box_pixels(depth_m: np.ndarray, box_xyxy: np.ndarray,
                max_pixels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h, w) strided crop of ``depth_m`` inside the box, and the (w,) column and (h,) row pixel coordinates."""
    height, width = depth_m.shape
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), width)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), height)
    stride = max(1, int(np.ceil(np.sqrt((c1 - c0) * (r1 - r0) / max_pixels))))
    crop = np.asarray(depth_m[r0:r1:stride, c0:c1:stride], dtype=np.float32)  # (h, w) z-depth metres
    return crop, np.arange(c0, c1, stride, dtype=np.float64), np.arange(r0, r1, stride, dtype=np.float64)


def _valid_readings(crop: np.ndarray, window: DepthWindow, edge_jump_fraction: float) -> np.ndarray:
    """
    (h, w) bool: in range and not a flying pixel.

    A flying pixel differs from *both* its neighbours along a row or a column (it hangs between a near and a far
    surface); an object's rim pixel differs from one side only and stays, else the object would lose a pixel of
    width at every silhouette edge (3 % of a 60 px box: the fitted scale shrank by as much).
    """
    with np.errstate(invalid='ignore'):  # NaN compares False: invalid, as it should be
        valid = (crop >= window.min_depth_m) & (crop <= window.max_depth_m)
    filled = np.where(valid, crop, np.nan)
    limit = edge_jump_fraction * filled
    flying = np.zeros(crop.shape, dtype=bool)
    with np.errstate(invalid='ignore'):  # a missing neighbour is no jump (NaN compares False)
        for axis in (0, 1):
            before = np.abs(filled - np.roll(filled, 1, axis=axis)) > limit
            after = np.abs(filled - np.roll(filled, -1, axis=axis)) > limit
            edge = [slice(None)] * 2
            edge[axis] = slice(1, -1)  # np.roll wraps around: the first and last rows/columns have one neighbour
            both = np.zeros(crop.shape, dtype=bool)
            both[tuple(edge)] = (before & after)[tuple(edge)]
            flying |= both
    return valid & ~flying


def _central(shape: tuple[int, int], roi_fraction: float) -> np.ndarray:
    """(h, w) bool: the central ``roi_fraction`` of the crop along each side (at least one pixel)."""
    mask = np.zeros(shape, dtype=bool)
    rows, cols = shape
    half_r, half_c = max(rows * roi_fraction / 2, 0.5), max(cols * roi_fraction / 2, 0.5)
    mask[max(int(rows / 2 - half_r), 0):int(np.ceil(rows / 2 + half_r)),
         max(int(cols / 2 - half_c), 0):int(np.ceil(cols / 2 + half_c))] = True
    return mask


def _ray_grid(K: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Return the (h, w) x and y of the z = 1 rays through the pixel grid ``cols`` × ``rows``.

    K is upper triangular, so y depends on the row only and x on both linearly (broadcast, no meshgrid or solve per
    pixel).
    """
    inverse = np.linalg.inv(np.asarray(K, dtype=np.float64))
    x = inverse[0, 0] * cols[None, :] + (inverse[0, 1] * rows + inverse[0, 2])[:, None]
    y = np.broadcast_to((inverse[1, 1] * rows + inverse[1, 2])[:, None], x.shape)
    return x, y


def _points(rays: tuple[np.ndarray, np.ndarray], crop: np.ndarray,
            where: np.ndarray | tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """
    Return the (P, 3) float64 points, metres, optical frame, of the readings of ``crop`` at ``where``.

    ``where`` is an (h, w) bool mask or row and column indices; ``rays`` are the crop's z = 1 rays.
    """
    z = crop[where].astype(np.float64)
    return np.stack([rays[0][where] * z, rays[1][where] * z, z], axis=1)


def support_plane(depth_m: np.ndarray, K: np.ndarray, box_xyxy: np.ndarray, window: DepthWindow,
                  settings: SurfaceSettings) -> tuple[np.ndarray, float] | None:
    """
    Fit the plane seen in a ring of pixels around the box.

    Return (unit normal n (3,), offset d) with n·x = d, n pointing away from the camera; None when the ring has too
    few readings or no plane holds ``plane_min_share`` of them.
    """
    height, width = depth_m.shape
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    margin = max(3.0, settings.ring_fraction * max(x1 - x0, y1 - y0))
    outer = np.array([x0 - margin, y0 - margin, x1 + margin, y1 + margin])
    crop, cols, rows = _box_pixels(depth_m, outer, settings.max_pixels // 2)
    inside = ((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None, :]  # (h, w)
    with np.errstate(invalid='ignore'):
        ring = ~inside & (crop >= window.min_depth_m) & (crop <= window.max_depth_m)
    if ring.sum() < max(settings.min_points, 3):
        return None
    points = _points(_ray_grid(K, cols, rows), crop, ring)  # (R, 3)
    tolerance = settings.plane_distance_fraction * points[:, 2]  # (R,) metres
    rng = np.random.default_rng(0)
    triples = points[rng.integers(0, len(points), size=(settings.plane_hypotheses, 3))]  # (Hy, 3, 3)
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])  # (Hy, 3)
    lengths = np.linalg.norm(normals, axis=1)
    usable = lengths > 1e-9
    if not usable.any():
        return None
    normals = normals[usable] / lengths[usable, None]
    offsets = np.einsum('hk,hk->h', normals, triples[usable, 0])  # (Hy,)
    support = (np.abs(points @ normals.T - offsets) <= tolerance[:, None]).sum(axis=0)  # (Hy,) inlier counts
    best = int(np.argmax(support))
    if support[best] < settings.plane_min_share * len(points):
        return None
    inliers = points[np.abs(points @ normals[best] - offsets[best]) <= tolerance]
    centroid = inliers.mean(axis=0)
    normal = np.linalg.svd(inliers - centroid, full_matrices=False)[2][2]  # least-squares plane normal
    offset = float(normal @ centroid)
    if offset < 0:  # orient n away from the camera (the camera centre is at n·0 = 0 < d)
        normal, offset = -normal, -offset
    return normal, offset


def front_depth(depths: np.ndarray, bin_fraction: float, mode_share: float) -> float:
    """z_f of (n,) z-depths: the centre of the nearest histogram mode holding ``mode_share`` of the largest one."""
    median = float(np.median(depths))
    bin_m = max(bin_fraction * median, 1e-4)
    low = float(depths.min())
    counts = np.bincount(((depths - low) / bin_m).astype(np.int64))
    # Two neighbouring bins share a surface that straddles a bin edge: smooth over three.
    smooth = np.convolve(counts, np.ones(3), mode='same')
    padded = np.pad(smooth, 1)  # zero beyond both ends: the nearest and the farthest bin can be modes
    peaks = np.flatnonzero((smooth >= mode_share * smooth.max())
                           & (smooth >= padded[:-2]) & (smooth >= padded[2:]))
    nearest = int(peaks[0]) if peaks.size else int(np.argmax(smooth))
    in_mode = depths[np.abs((depths - low) / bin_m - (nearest + 0.5)) <= 1.5]
    return float(np.median(in_mode))


def visible_surface(depth_m: np.ndarray, K: np.ndarray, box_xyxy: np.ndarray, window: DepthWindow,
                    box_fill: float, settings: SurfaceSettings,
                    exclude: np.ndarray | None = None) -> VisibleSurface | None:
    """
    Cut the object's front surface out of the (clipped) box; None when fewer than ``settings.min_points`` remain.

    ``depth_m`` (H, W) z-depth metres registered to the image (NaN or 0 = no reading); ``K`` (3, 3) intrinsics;
    ``box_fill`` the placement prior's κ, which bounds the object's radius from its box; ``exclude`` (M, 4) boxes
    whose pixels belong to other objects (:func:`occluding_boxes`).
    """
    crop, cols, rows = _box_pixels(depth_m, box_xyxy, settings.max_pixels)
    if crop.size == 0:
        return None
    usable = _valid_readings(crop, window, settings.edge_jump_fraction)
    for x0, y0, x1, y1 in () if exclude is None else exclude:
        usable &= ~(((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None, :])
    rays = _ray_grid(K, cols, rows)  # (h, w) x and y of the z = 1 rays
    plane = support_plane(depth_m, K, box_xyxy, window, settings)
    if plane is not None:
        normal, offset = plane
        x, y = rays
        # Signed distance of each reading from the plane, > 0 behind it (seen from the camera): n·(z ray) − d.
        signed = (normal[0] * x + normal[1] * y + normal[2]) * crop - offset
        with np.errstate(invalid='ignore'):
            usable &= signed < -settings.plane_distance_fraction * crop
    central = _central(crop.shape, window.roi_fraction)
    seeds = crop[usable & central]
    if seeds.size < max(window.min_valid_fraction * central.sum(), 1):
        # A frame-like object (a shower's frame, a folding chair) leaves its box centre to the background, which
        # the support plane removed: the object is what remains anywhere in the box. Measured on validation scenes
        # (scripts/shape_fit_tuning.py): without this, such objects were placed from the background's depth.
        central = np.ones(crop.shape, dtype=bool)
        seeds = crop[usable]
        if seeds.size < settings.min_points:
            return None
    z_front = front_depth(seeds, settings.mode_bin_fraction, settings.mode_share)
    with np.errstate(invalid='ignore'):
        front_rows, front_cols = np.nonzero(usable & central
                                            & (np.abs(crop - z_front) <= 2 * settings.mode_bin_fraction * z_front))
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    focal = float(min(K[0, 0], K[1, 1]))
    radius = max(x1 - x0, y1 - y0) / 2 * z_front / focal / box_fill  # metres the box allows at z_f
    with np.errstate(invalid='ignore'):
        near = usable & (crop >= z_front - radius) & (crop <= z_front + 2 * radius)
    labels, count = ndimage.label(near, structure=np.ones((3, 3), dtype=bool))
    touching = np.zeros(count + 1, dtype=bool)
    touching[labels[central]] = True
    touching[0] = False
    keep = touching[labels]
    if keep.sum() < settings.min_points:
        return None
    every = _points(rays, crop, keep)  # (R, 3), row by row
    pick = np.linspace(0, len(every) - 1, min(settings.max_points, len(every))).round().astype(np.int64)
    return VisibleSurface(points=every[pick], front_depth_m=z_front,  # evenly spread over the surface, deterministic
                          front_uv=np.stack([cols[front_cols], rows[front_rows]], axis=1), all_points=every)


def occluding_boxes(boxes: np.ndarray, surfaces: list[VisibleSurface | None], index: int,
                    settings: SurfaceSettings) -> np.ndarray:
    """
    (M, 4) the other detections' boxes whose pixels box ``index`` should not take for its own object.

    ``boxes`` (K, 4) the frame's detection boxes; ``surfaces`` their visible surfaces cut out alone. Box B is
    excluded from box A when most of A's front readings (``VisibleSurface.front_uv``) lie inside B, B's own front
    is not behind them (within two histogram bins, ``mode_bin_fraction``), and at least ``min_own_share`` of A's
    area lies outside B: then A's centre sees B, an object in front of A (a plant before a chair) or standing on it
    (a mug in the middle of a table). When B's front readings lie in A as much (both centres see one surface), it
    is the smaller box's object: a nearer object that hides the centre of a larger box's. Measured on validation
    scenes (scripts/shape_fit_tuning.py).
    """
    own = surfaces[index]
    if own is None:
        return boxes[:0]
    chosen = [box for other, (box, surface) in enumerate(zip(boxes, surfaces))
              if other != index and surface is not None and _claimed(own, box) > 0.5
              and _overlap(boxes[index], box) <= (1 - settings.min_own_share) * _area(boxes[index])
              and surface.front_depth_m <= own.front_depth_m * (1 + 2 * settings.mode_bin_fraction)
              and (_claimed(surface, boxes[index]) <= 0.5 or _area(box) < _area(boxes[index]))]
    return np.array(chosen, dtype=np.float64).reshape(-1, 4)


def _claimed(surface: VisibleSurface, box: np.ndarray) -> float:
    """Share of the surface's front readings inside ``box`` (0 without any)."""
    u, v = surface.front_uv[:, 0], surface.front_uv[:, 1]
    inside = (u >= box[0]) & (u <= box[2]) & (v >= box[1]) & (v <= box[3])
    return float(inside.mean()) if inside.size else 0.0


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Area (px²) of the intersection of two xyxy boxes."""
    return max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)


def seen_through(points: np.ndarray, depth_m: np.ndarray, K: np.ndarray, margin: float) -> np.ndarray:
    """
    (N,) bool: the (N, 3) optical-frame points that the depth image sees past, i.e. free space.

    True where the reading at a point's pixel lies more than ``margin`` × its depth beyond it; points outside the
    image, behind the camera or on a hole (NaN, 0) are not seen past.
    """
    z = points[:, 2]
    uv = points @ np.asarray(K, dtype=np.float64).T
    with np.errstate(invalid='ignore', divide='ignore'):
        u = np.round(uv[:, 0] / z)
        v = np.round(uv[:, 1] / z)
    height, width = depth_m.shape
    inside = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    reading = np.full(len(points), np.nan)
    reading[inside] = depth_m[v[inside].astype(np.int64), u[inside].astype(np.int64)]
    with np.errstate(invalid='ignore'):
        return reading > z * (1 + margin)
