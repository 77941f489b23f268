"""
Placement: from a unit-ball shape in a crop's virtual camera to metric points in the real camera optical frame.

The model sees a square crop centred on a detection box and predicts a shape that fits the unit ball (centroid at 0,
largest point norm 1), expressed in the crop's *virtual camera*: a camera at the real camera centre whose optical
axis passes through the crop centre (``contract.py``, ``output_frame: viewer``). Placing it needs, derived in
docs/node.md §Placement:

1. the rotation R from the virtual camera to the real optical frame (``BoxView.rotation``, :func:`box_views`);
2. the distance D from the camera centre to the object's centroid along the box-centre ray, and
3. the object's radius r in metres (largest surface distance from the centroid).

The box shows the object's *silhouette radius* r_s = D · sin α, α being the box's half-angle in the virtual camera
(``BoxView.half_angle``). Two shape statistics relate it to the bounding sphere (:class:`PlacementPrior`): the box
fills κ of the bounding sphere's silhouette (r_s = κ · r), and the centroid lies γ · r_s behind the visible front
surface. A sphere has κ = γ = 1; real objects less (measured: scripts/placement_calibration.py). With the class size
prior (``size_m`` = 2 r): D = κ · r / sin α, for small angles the pinhole D = f · κ · size / box_px. With depth the
front-surface distance d_s is measured: D = d_s + γ · D · sin α, so D = d_s / (1 − γ · sin α) and r = D · sin α / κ.

All frames are OpenCV/REP-103 optical: x right, y down, z forward; lengths in metres; pixels with integer centres.
Pure numpy: no rclpy, no message types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class BoxView:
    """How the camera sees one detection box: the crop's virtual camera and the box's extent in it."""

    ray: np.ndarray
    """(3,) unit ray through the box centre, optical frame: K⁻¹ [u, v, 1] normalised."""
    rotation: np.ndarray
    """(3, 3) rotation whose columns are the virtual camera's x, y, z axes in the real optical frame.

    z is the box-centre ray. The roll is fixed by keeping x in the plane spanned by the real x axis and the ray: that
    plane holds the image-row direction at the crop centre (∂ray/∂u ∝ real x), so the crop's horizontal pixel axis is
    the virtual x axis. For a box centred on the principal point it is the identity."""
    half_extents: tuple[float, float]
    """The box's half-width and half-height in the virtual camera's normalised image plane.

    The midpoints of the four box edges are back-projected, rotated into the virtual camera and divided by their
    depth there, so an off-axis box is measured as the virtual camera sees it, without the radial stretch of the real
    image. Edge midpoints, not corners: a silhouette touches its box on the edges; the corners of the box around a
    diagonally stretched silhouette lie well outside it (11 % too large for a sphere 26° off-axis, test_geometry.py)."""

    @property
    def half_angle(self) -> float:
        """α (radians): the half-angle of the larger box side in the virtual camera."""
        return float(np.arctan(max(self.half_extents)))


def box_views(K: np.ndarray, boxes_xyxy: np.ndarray) -> list[BoxView]:
    """
    Return the view of each of the (B, 4) boxes (x0, y0, x1, y1 pixels), computed for all boxes at once.

    Raises numpy.linalg.LinAlgError for a singular K and ValueError for intrinsics whose rays through the box
    centres are not finite or do not point in front of the camera: the frame cannot be placed (the node refuses
    such cameras before, ``intrinsics_check``).
    """
    inverse = np.linalg.inv(np.asarray(K, dtype=np.float64))
    x0, y0, x1, y1 = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).T  # (B,) each
    cx, cy, ones = (x0 + x1) / 2, (y0 + y1) / 2, np.ones(len(x0))
    z_axis = np.stack([cx, cy, ones], axis=1) @ inverse.T  # (B, 3) optical frame
    z_axis /= np.linalg.norm(z_axis, axis=1, keepdims=True)
    if not (np.isfinite(inverse).all() and np.isfinite(z_axis).all() and (z_axis[:, 2] > 0).all()):
        raise ValueError('the rays through the box centres are not finite or do not point in front of the camera')
    # Real x minus its component along the ray; never zero, since every pixel ray has z > 0.
    x_axis = np.array([1.0, 0.0, 0.0]) - z_axis[:, :1] * z_axis  # (B, 3)
    x_axis /= np.linalg.norm(x_axis, axis=1, keepdims=True)
    y_axis = np.cross(z_axis, x_axis)  # right-handed: x × y = z
    rotations = np.stack([x_axis, y_axis, z_axis], axis=2)  # (B, 3, 3), columns x, y, z
    edges = ((x0, cy), (x1, cy), (cx, y0), (cx, y1))  # left, right, top, bottom edge midpoints
    midpoints_px = np.stack([np.stack([u, v, ones], axis=1) for u, v in edges], axis=1)  # (B, 4, 3) homogeneous
    virtual = midpoints_px @ inverse.T @ rotations  # (B, 4, 3): each midpoint's ray in its virtual camera frame
    plane = virtual[..., :2] / virtual[..., 2:]  # (B, 4, 2) normalised virtual image coordinates
    half_width, half_height = (plane[:, 1, 0] - plane[:, 0, 0]) / 2, (plane[:, 3, 1] - plane[:, 2, 1]) / 2
    return [BoxView(ray=z_axis[i], rotation=rotations[i], half_extents=(float(half_width[i]), float(half_height[i])))
            for i in range(len(x0))]


def box_view(K: np.ndarray, box_xyxy: np.ndarray) -> BoxView:
    """Return the view of one box (:func:`box_views`)."""
    return box_views(K, box_xyxy)[0]


def virtual_camera_rotation(K: np.ndarray, u: float, v: float) -> np.ndarray:
    """(3, 3) rotation of the virtual camera whose optical axis passes through pixel (u, v) (``BoxView.rotation``)."""
    return box_view(K, np.array([u, v, u, v])).rotation


@dataclass(frozen=True)
class PlacementPrior:
    """
    How a detection box and a depth reading relate to an object's bounding sphere (1, 1 for a sphere).

    The defaults are medians over rendered views of the generated dataset's objects, measured by
    ``scripts/placement_calibration.py`` (docs/node.md §Placement lists the run and the spread).
    """

    box_fill: float = 0.81
    """κ: the box half-size as a fraction of the bounding sphere's silhouette (a box is tighter than the sphere)."""
    centre_offset: float = 0.35
    """γ: how far the centroid lies behind the median front-surface depth, in silhouette radii."""


SPHERE = PlacementPrior(box_fill=1.0, centre_offset=1.0)


def distance_from_size_prior(size_m: float, half_angle: float, prior: PlacementPrior) -> float:
    """Centroid distance D = κ · r / sin α of an object of bounding diameter ``size_m`` seen under half-angle α."""
    if not (size_m > 0 and 0 < half_angle < np.pi / 2):
        raise ValueError(f'need size_m > 0 and 0 < half_angle < π/2, got size_m={size_m}, half_angle={half_angle}')
    return prior.box_fill * size_m / 2 / np.sin(half_angle)


def distance_from_surface(surface_m: float, half_angle: float, prior: PlacementPrior) -> float:
    """Centroid distance D = d_s / (1 − γ · sin α): the centroid lies γ silhouette radii behind the front surface."""
    if not (surface_m > 0 and 0 < half_angle < np.pi / 2 and prior.centre_offset * np.sin(half_angle) < 1):
        raise ValueError(f'need surface_m > 0, 0 < half_angle < π/2 and centre_offset · sin(half_angle) < 1, got '
                         f'surface_m={surface_m}, half_angle={half_angle}, centre_offset={prior.centre_offset}')
    return surface_m / (1.0 - prior.centre_offset * np.sin(half_angle))


@dataclass(frozen=True)
class DepthWindow:
    """Which depth pixels count as the object's front surface."""

    roi_fraction: float = 0.5
    """Side of the central region as a fraction of the box side: the box corners are mostly background."""
    min_depth_m: float = 0.05
    max_depth_m: float = 20.0
    min_valid_fraction: float = 0.1
    """Below this share of valid pixels in the region the depth is not trusted (holes, NaN, zero)."""


def surface_distance(depth_m: np.ndarray, box_xyxy: np.ndarray, view: BoxView, window: DepthWindow) -> float | None:
    """
    Distance (metres, along the box-centre ray) to the front surface: the median valid depth of the central region.

    ``depth_m`` is (H, W) z-depth in metres aligned with the image; NaN, 0 and values outside
    [min_depth_m, max_depth_m] are invalid; ``view`` is the box's (:func:`box_view`). None when too few pixels are
    valid.
    """
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = max((x1 - x0) * window.roi_fraction / 2, 0.5)
    half_h = max((y1 - y0) * window.roi_fraction / 2, 0.5)
    height, width = depth_m.shape
    c0, c1 = max(int(np.floor(cx - half_w)), 0), min(int(np.ceil(cx + half_w)), width)
    r0, r1 = max(int(np.floor(cy - half_h)), 0), min(int(np.ceil(cy + half_h)), height)
    region = depth_m[r0:r1, c0:c1]
    if region.size == 0:
        return None
    with np.errstate(invalid='ignore'):  # NaN compares False, which is what we want
        valid = region[(region >= window.min_depth_m) & (region <= window.max_depth_m)]
    if valid.size == 0 or valid.size < window.min_valid_fraction * region.size:
        return None
    # A point at z-depth z on the unit ray r is z / r_z away from the camera centre.
    return float(np.median(valid) / view.ray[2])  # numpy: a ray with r_z = 0 gives inf (for the guard), no raise


def _coordinate_rows(points: np.ndarray) -> np.ndarray:
    """
    Return a (..., 3, N) contiguous copy of (..., N, 3) points.

    numpy reduces the long axis of this layout over 10 x faster than the points axis of (..., N, 3), where every
    step is a 3-wide stride (measured: min of 5 x 1,024 points 8 vs 140 µs): the per-frame placement's hot spot.
    """
    return np.ascontiguousarray(np.swapaxes(points, -1, -2))


def shape_bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the (..., 3) lowest and highest coordinates of (..., N, 3) points: their axis-aligned box."""
    rows = _coordinate_rows(points)
    return rows.min(axis=-1), rows.max(axis=-1)


def normalise_shape(points: np.ndarray) -> np.ndarray:
    """
    (..., N, 3) predicted shapes -> (..., N, 3) float64, each centred on its centroid and scaled to a largest norm of 1.

    The dataset's unit-ball normalisation, applied again: a trained model's output already satisfies it, a
    random-weight model's does not, and re-applying it makes the placed cloud's centroid the placement centre,
    whatever the network predicts. A shape whose points are all equal: zeros.
    """
    points = np.asarray(points, dtype=np.float64)
    rows = _coordinate_rows(points)  # (..., 3, N)
    centred = points - rows.mean(axis=-1)[..., None, :]
    radius = np.sqrt(np.einsum('...ni,...ni->...n', centred, centred).max(axis=-1))[..., None, None]  # (..., 1, 1)
    # Rounding leaves ~1e-16 of spread on identical points; that is no shape to blow up to the unit ball.
    point = np.maximum(1.0, np.abs(rows).max(axis=(-2, -1)))[..., None, None]  # (..., 1, 1)
    # NaN compares False both ways: a non-finite shape stays non-finite, for the output guard to reject.
    return np.where(radius <= 1e-9 * point, 0.0, centred / np.where(radius > 0, radius, 1.0))


MAX_ASPECT_STRETCH = 1.5
"""Most :func:`match_box_aspect` stretches either lateral axis: a box cut by an occluder or the image edge is no
measurement of the object's proportions."""


def match_box_aspect(unit: np.ndarray, half_extents: np.ndarray, weight: float) -> np.ndarray:
    """
    Move viewer-frame unit-ball shapes' silhouette width ÷ height towards their boxes', keeping their size.

    The box bounds the object's real silhouette, while a learned shape's proportions regress towards its class's
    mean (a tall chair comes out squat). x and y are scaled by a and 1 / a, a = (box aspect ÷ shape aspect) ^
    (weight / 2) within 1 / MAX_ASPECT_STRETCH … MAX_ASPECT_STRETCH, and the result is scaled back to a largest norm
    of 1: depth, the size across the view and hence the placement's scale (box, depth or fit) are untouched.
    ``unit`` (B, N, 3) centred unit-ball shapes (:func:`normalise_shape`), which stay centred; ``half_extents``
    (B, 2), the boxes' ``BoxView.half_extents``; the shape's silhouette is taken as orthographic (its x and y
    extents). A shape or box without width or height is left as it is.
    """
    if weight <= 0:
        return unit
    low, high = shape_bounds(unit)
    extent = high - low  # (B, 3)
    half_extents = np.asarray(half_extents, dtype=np.float64).reshape(-1, 2)
    usable = (extent[:, :2] > 0).all(axis=1) & (half_extents > 0).all(axis=1)  # (B,)
    with np.errstate(divide='ignore', invalid='ignore'):  # the unusable ones, replaced below
        ratio = (half_extents[:, 0] / half_extents[:, 1]) / (extent[:, 0] / extent[:, 1])
        stretch = np.where(usable, np.clip(ratio ** (weight / 2), 1 / MAX_ASPECT_STRETCH, MAX_ASPECT_STRETCH), 1.0)
    factors = np.stack([stretch, 1 / stretch, np.ones_like(stretch)], axis=1)[:, None, :]  # (B, 1, 3)
    stretched = unit * factors  # (B, N, 3), still centred: the centroid scales with the points
    radius = np.sqrt(np.einsum('bni,bni->bn', stretched, stretched).max(axis=1))[:, None, None]  # (B, 1, 1)
    return np.where(usable[:, None, None], stretched / np.where(usable[:, None, None], radius, 1.0), unit)


@dataclass(frozen=True)
class Placement:
    """Where an object sits: its centroid, radius and the orientation of its shape, in the real optical frame."""

    centre: np.ndarray
    """(3,) metres, camera optical frame: the object's centroid; on the ray through the box centre unless fitted."""
    radius_m: float
    rotation: np.ndarray
    """(3, 3) shape frame → optical frame: the virtual camera, or the identity for canonical-frame models."""
    mode: str
    """``fit`` (shape fitted to the visible surface, ``shape_fit.py``), ``depth`` or ``size_prior``."""

    def transform(self, unit_points: np.ndarray) -> np.ndarray:
        """(N, 3) unit-ball points in the shape frame -> (N, 3) float32 metres in the optical frame."""
        return (self.centre + self.radius_m * unit_points @ self.rotation.T).astype(np.float32)


def place(view: BoxView, size_m: float, surface_m: float | None, orientation_known: bool,
          prior: PlacementPrior) -> Placement:
    """
    Place one object from its (clipped) box's view, its class size prior and, when measured, its front-surface distance.

    ``surface_m`` None selects the size prior. ``orientation_known`` False (canonical-frame models) keeps the shape
    axis-aligned with the optical frame: only the centre and the scale are meaningful then.
    """
    half_angle = view.half_angle
    if surface_m is not None:
        distance = distance_from_surface(surface_m, half_angle, prior)
        radius, mode = distance * np.sin(half_angle) / prior.box_fill, 'depth'
    else:
        distance = distance_from_size_prior(size_m, half_angle, prior)
        radius, mode = size_m / 2, 'size_prior'
    return Placement(centre=distance * view.ray, radius_m=float(radius),
                     rotation=view.rotation if orientation_known else np.eye(3), mode=mode)


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """
    (x, y, z, w) unit quaternion of a (3, 3) rotation matrix, w >= 0 (geometry_msgs order).

    Shepperd's method: start from the largest of the four squared components, so no division is ill-conditioned.
    """
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    squares = np.array([1 + 2 * m[0, 0] - trace, 1 + 2 * m[1, 1] - trace, 1 + 2 * m[2, 2] - trace, 1 + trace])
    big = int(np.argmax(squares))  # 4 · q_big², one of x, y, z, w
    q = np.empty(4)
    q[big] = np.sqrt(squares[big]) / 2
    scale = 4 * q[big]
    if big == 3:
        q[:3] = (m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1])
    elif big == 0:
        q[1:] = (m[0, 1] + m[1, 0], m[0, 2] + m[2, 0], m[2, 1] - m[1, 2])
    elif big == 1:
        q[[0, 2, 3]] = (m[0, 1] + m[1, 0], m[1, 2] + m[2, 1], m[0, 2] - m[2, 0])
    else:
        q[[0, 1, 3]] = (m[0, 2] + m[2, 0], m[1, 2] + m[2, 1], m[1, 0] - m[0, 1])
    q[np.arange(4) != big] /= scale
    return q if q[3] >= 0 else -q
