"""
Is a camera matrix plausible for its image? The checks a calibration tool would refuse a result for.

A CameraInfo can hold any finite numbers: fx = 1e-12 places objects 1e14 m away, cx = -1e5 a kilometre to the side,
fx = 1e300 overflows to inf. None of that is a camera. The bounds below admit every real pinhole camera (fisheye
lenses beyond 170° are not pinhole and need rectification first) and refuse the rest, so the node skips the frame
instead of publishing confident garbage.
"""

from __future__ import annotations

import math

import numpy as np

MIN_FOV_DEG, MAX_FOV_DEG = 0.5, 170.0
"""Field of view along each image axis: a 0.5° telephoto to a 170° wide-angle pinhole."""
MAX_ASPECT = 4.0
"""Largest fy/fx (or fx/fy): square pixels give 1, anamorphic lenses up to about 2."""
PRINCIPAL_POINT_MARGIN = 0.5
"""The principal point may lie this fraction of the image size outside it (cropped or shifted sensors); no more."""
MAX_SKEW = 0.1
"""|K[0, 1]| / fx: real sensors have 0 (rows and columns are perpendicular); 0.1 is a 5.7° shear."""
MAX_IMAGE_SIDE = 65535
"""Largest width or height (pixels) accepted: no camera is bigger, and larger sizes overflow float32 pixel maths."""


def intrinsics_problem(k: np.ndarray, width: int, height: int) -> str | None:
    """Why the (3, 3) pinhole matrix ``k`` cannot belong to a ``width`` x ``height`` image, or None if it can."""
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        return f'image size {width}x{height} is outside 1…{MAX_IMAGE_SIDE} pixels'
    k = np.asarray(k, dtype=np.float64)
    if k.shape != (3, 3) or not np.isfinite(k).all():
        return 'K is not a finite 3x3 matrix'
    if k[1, 0] != 0 or tuple(k[2]) != (0.0, 0.0, 1.0):
        return 'K is not a pinhole matrix (upper triangular, last row 0, 0, 1)'
    fx, skew, cx, fy, cy = k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2]
    for name, focal, side in (('fx', fx, width), ('fy', fy, height)):
        # Field of view 2·atan(side / 2f) within [MIN_FOV_DEG, MAX_FOV_DEG]  <=>  f within these bounds.
        low = side / 2 / math.tan(math.radians(MAX_FOV_DEG) / 2)
        high = side / 2 / math.tan(math.radians(MIN_FOV_DEG) / 2)
        if not low <= focal <= high:
            return (f'{name} = {focal:.6g} px is outside {low:.4g}…{high:.4g} px, a field of view of '
                    f'{MIN_FOV_DEG:g}…{MAX_FOV_DEG:g}° across {side} px')
    if not 1 / MAX_ASPECT <= fy / fx <= MAX_ASPECT:
        return f'fy / fx = {fy / fx:.4g} is outside 1/{MAX_ASPECT:g}…{MAX_ASPECT:g}'
    if abs(skew) > MAX_SKEW * fx:
        return f'skew K[0, 1] = {skew:.6g} is more than {MAX_SKEW:g} fx'
    for name, centre, side in (('cx', cx, width), ('cy', cy, height)):
        low, high = -PRINCIPAL_POINT_MARGIN * side, (1 + PRINCIPAL_POINT_MARGIN) * side
        if not low <= centre <= high:
            return (f'{name} = {centre:.6g} px is outside {low:g}…{high:g} px (the image ± '
                    f'{PRINCIPAL_POINT_MARGIN:g} of its size)')
    return None
