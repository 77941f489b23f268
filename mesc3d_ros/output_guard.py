"""
The last check before an object is published: physically possible coordinates, a size and a distance in bounds.

Inputs are validated where they enter (``intrinsics_check``, the pipeline's box, score and depth checks), but a
grasp planner acts on what comes out, so the output is checked on its own: an object with a non-finite coordinate,
a point at or behind the camera plane, a size beyond any graspable or even movable object, or a centroid beyond any
sensor's range is dropped with its cause, never sent. Also the size of a frame's cloud on the wire.
"""

from __future__ import annotations

import numpy as np

MIN_Z_M = 1e-3
"""Every point must lie at least this far in front of the camera (z, optical frame): nearer is inside the lens."""
MAX_OBJECT_SIZE_M = 10.0
"""Largest extent of one object's box; the model reconstructs objects, not buildings."""
MAX_DISTANCE_M = 1000.0
"""Largest centroid distance from the camera: ``max_depth_m``'s upper bound, beyond any depth sensor."""

CLOUD_POINT_BYTES = 16
"""Bytes per published point: x, y, z float32 + object_index uint32 (object_messages.objects_to_messages)."""
MAX_CLOUD_BYTES = 4 * 2**20
"""Largest published cloud. The Fast DDS profile (config/fastdds_loopback.xml) gives shared memory an 8 MB segment;
half of it leaves room for the objects message and a second sample in flight."""


def objects_that_fit(num_points: int, wanted: int) -> int:
    """How many objects of ``num_points`` points each a frame may publish: ``wanted`` or fewer if the cloud is full."""
    return max(1, min(wanted, MAX_CLOUD_BYTES // (num_points * CLOUD_POINT_BYTES)))


def object_problem(points: np.ndarray, centre: np.ndarray, box_centre: np.ndarray,
                   box_size_m: np.ndarray) -> tuple[str, str] | None:
    """
    (cause, detail) why an object must not be published, or None.

    points (N, 3) metres, optical frame; centre (3,) its centroid; box_centre (3,) and box_size_m (3,) its box.
    """
    if not (np.isfinite(points).all() and np.isfinite(centre).all() and np.isfinite(box_centre).all()
            and np.isfinite(box_size_m).all()):
        return 'output_not_finite', 'a coordinate or size is NaN or infinite'
    nearest = float(points[:, 2].min()) if len(points) else float(centre[2])
    if nearest < MIN_Z_M:
        return 'output_behind_camera', f'a point lies at z = {nearest:.3g} m, not in front of the camera'
    size = float(np.max(box_size_m))
    if size > MAX_OBJECT_SIZE_M:
        return 'output_too_large', f'its box is {size:.3g} m across (limit {MAX_OBJECT_SIZE_M:g} m)'
    distance = float(np.linalg.norm(centre))
    if distance > MAX_DISTANCE_M:
        return 'output_too_far', f'its centroid is {distance:.3g} m away (limit {MAX_DISTANCE_M:g} m)'
    return None
