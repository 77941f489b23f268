"""
Shape fit: the scale and translation that put the predicted unit-ball shape onto the measured visible surface.

The model predicts the whole object (hidden back included) at unit size; the depth image measures its front
surface in metres (``visible_surface.py``). The fit solves for a scale s and translation t such that the predicted
points the camera can see, s · q_i + t, lie on the measured points m_j (q = the shape rotated into the optical
frame, ``Placement.rotation``; the rotation itself is kept: the model's viewer-frame output already carries it):

1. **Visible side.** An orthographic z-buffer along the box-centre ray keeps, per cell of ``visible_cell`` unit
   radii, the predicted points within ``visible_tolerance`` of the cell's nearest one (the model's points are a
   sparse sample, so a cell rarely holds a surface point and one behind it at once). The view direction hardly
   changes with the object's pose, so this is done once, before the fit.
2. **Trimmed ICP for (s, t).** Start with the visible parts' centroids on each other and the scale from their
   spread across the view ray (the box placement's radius is only a bound); then repeat: match every measured
   point to its nearest visible predicted point (scipy cKDTree, built once on the unit shape: a measured point is
   queried as (m − t) / s), keep the ``trim_fraction`` best matches (the floor at an object's foot, a neighbour's
   edge and the shape's own errors go), and solve the 4-unknown point-to-plane + point-to-point least-squares
   problem in closed form (``_solve_plane``). At most ``max_iterations`` rounds on ``coarse_points`` measured
   points, then at most ``fine_iterations`` on all; a round that moves (t, s) by less than ``converged_fraction``
   radii ends its stage. With the defaults the work is bounded: ≤ 400 measured points, ≤ 6 rounds, one k-d tree
   per object.
3. **Box constraint.** The fitted shape's projection may exceed the detection box by at most ``box_tolerance`` of
   the box size (the box bounds the silhouette; background the trimming missed would inflate the shape): a larger
   projection scales s down to it and re-solves t for the fixed s.
4. **Acceptance.** A trimmed RMS above ``max_rms_fraction`` of the fitted radius, or a scale outside
   ``scale_range`` of the box estimate, is a poor fit: the caller falls back to the box placement.

Lengths in metres, points in the camera optical frame (x right, y down, z forward). Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class FitSettings:
    """Fit parameters (demo scenes and the synthetic tests hold with these; docs/node.md §Shape fit)."""

    max_iterations: int = 5
    """Rounds on the coarse subset (``coarse_points``) at most; then at most ``fine_iterations`` on all points."""
    coarse_points: int = 150
    """Measured points (evenly picked) matched in the coarse rounds: a round's cost is mostly per point, and the
    coarse rounds only have to bring (s, t) near the optimum that the fine rounds polish on every point."""
    fine_iterations: int = 1
    """Measured on test_shape_fit's 8 cuboid cases: 5 + 1 rounds from the spread-based start place them as well as
    5 + 2 and 15 + 5 (mean 3.1, 3.1, 3.3 mm, worst 6.0, 6.0, 6.9 mm, scale within 1.8, 1.6, 1.4 %), and the
    validation scenes as well as 5 + 2 (scripts/shape_fit_tuning.py: centroid 2.50 vs 2.52 %, placed CD-L1 6.61 vs
    6.63 cm; 4 + 1 and 3 + 2: 2.7 %): more rounds change nothing measurable (the trimmed ICP's fixed point, not
    convergence, is the error), and a round on all 400 points is the fit's most expensive step."""
    trim_fraction: float = 0.8
    """Share of the matches kept each round: the rest is background, neighbour or shape error."""
    visible_cell: float = 0.12
    """z-buffer cell side, unit radii: ~4 of 1,024 predicted points fall into a front-facing cell."""
    visible_tolerance: float = 0.15
    """How far behind a cell's nearest predicted point another still counts as seen, unit radii."""
    max_rms_fraction: float = 0.2
    """Trimmed RMS residual above this share of the fitted radius: a poor fit (fallback)."""
    scale_range: tuple[float, float] = (0.5, 2.0)
    """Fitted scale relative to the box estimate; outside: a poor fit (fallback)."""
    box_tolerance: float = 0.15
    """How much the fitted shape's projection may exceed the box, as a share of the box side."""
    point_weight: float = 0.3
    """Weight of the point-to-point term next to the point-to-plane one (``_solve_plane``). Measured: 0.3 recovers
    the synthetic cuboid's and the test spheres' scale within 4 % (3.0: spheres 8 % too small, point-to-point
    shrinks a convex shape) and places the demo's objects with a 3.4 % centroid error (point-to-plane alone 4.5 %)."""
    densify_neighbours: int = 4
    """Midpoints added per visible predicted point (:func:`densify`)."""
    converged_fraction: float = 1e-3
    """Stop when a round changes (t, s) by less than this many radii (0.15 mm at a 15 cm radius)."""

    def __post_init__(self) -> None:
        if self.max_iterations < 1 or self.fine_iterations < 1 or self.coarse_points < 3:
            raise ValueError(f'the fit needs max_iterations and fine_iterations >= 1 and coarse_points >= 3, got '
                             f'{self.max_iterations}, {self.fine_iterations}, {self.coarse_points}')


@dataclass(frozen=True, eq=False)
class ShapeFit:
    """A fitted shape: placed points are ``centre + radius_m · q``."""

    centre: np.ndarray
    """(3,) metres, optical frame: the fitted shape's centroid."""
    radius_m: float
    rms_m: float
    """Trimmed RMS distance between the matched measured and predicted points."""
    visible_points: int
    """Measured surface points the fit used."""
    hidden: np.ndarray
    """(N,) bool: predicted points on the side the camera does not see."""
    accepted: bool
    reason: str
    """Why the fit was rejected; empty when accepted."""


def visible_mask(q: np.ndarray, view_ray: np.ndarray, cell: float, tolerance: float) -> np.ndarray:
    """(N,) bool of the (N, 3) unit-scale points ``q`` seen along the unit ``view_ray`` (orthographic z-buffer)."""
    ray = view_ray / np.linalg.norm(view_ray)
    side = np.cross(ray, [0.0, 1.0, 0.0] if abs(ray[1]) < 0.9 else [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    up = np.cross(ray, side)
    depth = q @ ray  # (N,) along the view ray
    cells = np.floor(np.stack([q @ side, q @ up], axis=1) / cell).astype(np.int64)  # (N, 2) grid cell
    cells -= cells.min(axis=0)
    flat = cells[:, 0] * (cells[:, 1].max() + 1) + cells[:, 1]  # (N,) cell id
    nearest = np.full(flat.max() + 1, np.inf)
    np.minimum.at(nearest, flat, depth)
    return depth <= nearest[flat] + tolerance


def densify(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """
    Add to (V, 3) points the midpoints to each one's neighbours: ((1 + k) V, 3), point by point.

    ``neighbours`` are (V, k) indices, not the point itself.

    A measured point's nearest predicted point lies on average half a sample spacing away, and at the shape's rim
    always inwards, which pulls the scale down (4 % on the synthetic cuboid with 1,024 predicted points); halving
    the spacing halves that bias.
    """
    midpoints = (points[:, None] + points[neighbours]) / 2  # (V, k, 3)
    return np.concatenate([points, midpoints.reshape(-1, 3)])


def _solve(m: np.ndarray, q: np.ndarray, scale: float | None) -> tuple[float, np.ndarray]:
    """(s, t) minimising Σ |m − s q − t|² over matched (K, 3) pairs; ``scale`` given: t only."""
    m_mean, q_mean = m.mean(axis=0), q.mean(axis=0)
    if scale is None:
        qc = q - q_mean
        scale = float(np.sum((m - m_mean) * qc) / max(float(np.sum(qc * qc)), 1e-12))
    return scale, m_mean - scale * q_mean


NORMAL_NEIGHBOURS = 8
"""Points (the point itself included) whose spread gives a predicted point's normal; the same query gives densify
its neighbours (one k-d tree query instead of two)."""


def _normals(points: np.ndarray, index: np.ndarray) -> np.ndarray:
    """
    (V, 3) unit normals of (V, 3) points: the least-variance axis of each point's nearest, ``index`` (V, k).

    Power iteration on the adjugate of each 3 x 3 covariance (its largest eigenvalue λ1·λ2 belongs to the smallest
    covariance axis): vectorised cross products, 10 x cheaper than one LAPACK eigh per point.
    """
    local = points[index]  # (V, k, 3)
    local = local - local.mean(axis=1, keepdims=True)
    cov = np.matmul(local.transpose(0, 2, 1), local)  # (V, 3, 3)
    # Row i of the adjugate is row i+1 × row i+2 (indices mod 3): all three rows' cross products at once.
    after, next_after = cov[:, [1, 2, 0]], cov[:, [2, 0, 1]]  # (V, 3, 3) rows i+1 and i+2
    adjugate = (after[:, :, [1, 2, 0]] * next_after[:, :, [2, 0, 1]]
                - after[:, :, [2, 0, 1]] * next_after[:, :, [1, 2, 0]])  # (V, 3, 3), symmetric
    normal = adjugate[np.arange(len(points)), np.argmax(np.square(adjugate).sum(axis=2), axis=1)]
    for _ in range(2):
        normal = np.matmul(adjugate, normal[:, :, None])[:, :, 0]
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)
    return normal


def _solve_plane(m: np.ndarray, q: np.ndarray, n: np.ndarray, point_weight: float) -> tuple[float, np.ndarray]:
    """
    Solve for (s, t) minimising Σ (n·(m − s q − t))² + w Σ |m − s q − t|² over matched (K, 3) pairs.

    n are the predicted points' normals, w = ``point_weight``.

    Point-to-plane lets a measured point slide along the predicted surface: point-to-point alone pulls the rims of
    a sparse prediction inwards (a rim point's nearest predicted point lies inside), which shrank the scale 5-9 %
    on the synthetic cuboid and spheres. Point-to-plane alone slides along a wrongly predicted surface: on the
    demo's scenes the centroid error grew from 3.2 to 4.5 % of the distance. The weighted sum keeps both in check.
    """
    plane = np.column_stack([np.einsum('ki,ki->k', n, q), n])  # (K, 4): d(n·(s q + t)) / d(s, t)
    normal = plane.T @ plane  # (4, 4) normal equations in (s, t)
    rhs = plane.T @ np.einsum('ki,ki->k', n, m)  # (4,)
    q_sum = q.sum(axis=0)
    normal[0, 0] += point_weight * np.vdot(q, q)
    normal[0, 1:] += point_weight * q_sum
    normal[1:, 0] += point_weight * q_sum
    normal[[1, 2, 3], [1, 2, 3]] += point_weight * len(q)
    rhs[0] += point_weight * np.vdot(q, m)
    rhs[1:] += point_weight * m.sum(axis=0)
    solution = np.linalg.solve(normal, rhs)
    return float(solution[0]), solution[1:]


def _tree(points: np.ndarray) -> cKDTree:
    """
    Return a k-d tree of (M, 3) points for exact nearest-neighbour queries.

    Sliding-midpoint splits and larger leaves than scipy's defaults: the same neighbours, and measured on the shape fit
    bench's frame (5 objects, ~2,100 and ~10,500 points) 2 x faster to build and 20-30 % faster to query.
    """
    return cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=False)


def _icp(tree: cKDTree, front: np.ndarray, normals: np.ndarray, measured: np.ndarray, scale: float,
         centre: np.ndarray, rounds: int,
         settings: FitSettings) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """
    Run at most ``rounds`` (≥ 1) trimmed ICP rounds from (``scale``, ``centre``).

    Matches (P, 3) ``measured`` against the ``tree`` of (F, 3) unit-scale ``front`` points with their ``normals``.
    Return (s, t, indices of the kept matches, (P,) unit-scale distances of the last round's matches).
    """
    keep_count = max(3, int(round(settings.trim_fraction * len(measured))))
    for _ in range(rounds):
        distance, match = tree.query((measured - centre) / scale)
        kept = np.argpartition(distance, keep_count - 1)[:keep_count]
        matched = match[kept]
        new_scale, new_centre = _solve_plane(measured[kept], front[matched], normals[matched], settings.point_weight)
        if not new_scale > 0:  # a degenerate match set (all on one point): keep the previous estimate
            break
        step = np.append(new_centre - centre, new_scale - scale) / scale  # (4,) change of (t, s) in radii
        scale, centre = new_scale, new_centre
        if float(np.linalg.norm(step)) < settings.converged_fraction:
            break
    return scale, centre, kept, distance


def _projected_extent(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(2,) width and height in pixels of the projection of (N, 3) optical-frame points (all in front)."""
    uv = (points @ np.asarray(K, dtype=np.float64).T)[:, :2] / points[:, 2:3]
    return uv.max(axis=0) - uv.min(axis=0)


def fit_shape(q: np.ndarray, measured: np.ndarray, radius0_m: float, view_ray: np.ndarray, K: np.ndarray,
              box_xyxy: np.ndarray, settings: FitSettings) -> ShapeFit:
    """
    Fit ``s · q + t`` onto ``measured``, starting from s = ``radius0_m``.

    q (N, 3) the unit-ball shape rotated into the optical frame; measured (P, 3) metres, optical frame (the
    visible surface); radius0_m the box placement's radius at the measured front depth; view_ray (3,) the
    box-centre ray; K (3, 3) intrinsics; box_xyxy the (clipped) detection box in pixels.
    """
    hidden = ~visible_mask(q, view_ray, settings.visible_cell, settings.visible_tolerance)
    seen = q[~hidden]  # (V, 3) unit scale, optical-frame axes
    neighbours = min(max(NORMAL_NEIGHBOURS, settings.densify_neighbours + 1), len(seen))
    _, near = _tree(seen).query(seen, k=neighbours)  # (V, k), each point first
    # Normals from the prediction's own points; a midpoint takes its first end's (densify's order).
    normals = _normals(seen, near[:, :NORMAL_NEIGHBOURS])  # (V, 3) unit, sign arbitrary: a squared residual ignores it
    front = densify(seen, near[:, 1:settings.densify_neighbours + 1])  # (V · (1 + k), 3)
    normals = np.concatenate([normals, np.repeat(normals, len(front) // len(seen) - 1, axis=0)])
    tree = _tree(front)
    keep_count = max(3, int(round(settings.trim_fraction * len(measured))))
    # Start with the visible parts' centroids on each other: the box placement's depth is only a prior guess. The
    # depth image samples a surface per pixel, i.e. per projected area: the predicted points are weighted by how
    # squarely they face the camera, else a round shape's rim pulls its centroid back by ~0.2 radii (measured on
    # the bench's balls), which the ICP then spends rounds to creep out of.
    ray = view_ray / np.linalg.norm(view_ray)
    # A sparse prediction lets a few far-side points through the z-buffer (rim cells holding only those): facing
    # counts a point only when its normal, turned outwards (away from the unit shape's centre), faces the camera.
    outward = np.sign(np.einsum('fi,fi->f', normals, front))  # (F,)
    facing = np.maximum(-outward * (normals @ ray), 0.0) + 1e-9  # (F,) cos of the view angle, 0 facing away
    weight = facing / facing.sum()
    front_mean, measured_mean = weight @ front, measured.mean(axis=0)
    # The scale starts from the spread across the view ray, measured ÷ predicted visible side (area-weighted): the
    # box estimate is often 20-30 % off, and ICP only creeps out of that along the valley where a larger, farther
    # shape shows nearly the same front (1-2 % per round, measured on the bench's balls). Within scale_range.
    lateral = np.eye(3) - np.outer(ray, ray)  # (3, 3) projection across the view ray
    spread_measured = np.mean(np.square((measured - measured_mean) @ lateral))
    spread_front = weight @ np.square((front - front_mean) @ lateral).sum(axis=1) / 3
    low, high = settings.scale_range
    scale = float(np.clip(np.sqrt(spread_measured / max(spread_front, 1e-12)), low * radius0_m, high * radius0_m))
    centre = measured_mean - scale * front_mean
    coarse = measured[np.linspace(0, len(measured) - 1, min(settings.coarse_points, len(measured))).astype(np.int64)]
    scale, centre, _, _ = _icp(tree, front, normals, coarse, scale, centre, settings.max_iterations, settings)
    scale, centre, kept, distance = _icp(tree, front, normals, measured, scale, centre, settings.fine_iterations,
                                         settings)
    box_size = np.array([box_xyxy[2] - box_xyxy[0], box_xyxy[3] - box_xyxy[1]], dtype=np.float64)
    placed = centre + scale * q  # (N, 3) metres, optical frame
    if (placed[:, 2] > 0).all():
        # Measured on the demo scenes: clamping only an overshoot beats fitting the scale to the box both ways
        # (a box is tighter than the predicted shape's silhouette whenever the shape is a bit too wide).
        overshoot = float(np.max(_projected_extent(placed, K) / (box_size * (1 + settings.box_tolerance))))
        if overshoot > 1:
            _, match = tree.query((measured[kept] - centre) / scale)
            scale, centre = _solve(measured[kept], front[match], scale / overshoot)
            distance, _ = tree.query((measured - centre) / scale)
    # Else the last round's distances: one step (below converged_fraction radii, or the last of the capped rounds)
    # stale, nothing next to the rejection threshold (max_rms_fraction radii).
    residual = distance * scale
    rms = float(np.sqrt(np.mean(np.sort(residual)[:keep_count] ** 2)))
    reason = ''
    if not (low * radius0_m <= scale <= high * radius0_m):
        reason = f'fitted radius {scale:.3f} m is outside {low:g}-{high:g} x the box estimate {radius0_m:.3f} m'
    elif rms > settings.max_rms_fraction * scale:
        reason = f'residual {rms * 1e3:.1f} mm exceeds {settings.max_rms_fraction:g} x the radius {scale:.3f} m'
    elif not (centre[2] > 0):
        reason = f'fitted centre {np.round(centre, 3).tolist()} is behind the camera'
    return ShapeFit(centre=centre, radius_m=float(scale), rms_m=rms, visible_points=len(measured), hidden=hidden,
                    accepted=not reason, reason=reason)
