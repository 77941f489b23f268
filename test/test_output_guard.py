"""output_guard: what may be published, and how many objects fit the transport."""

from __future__ import annotations

import numpy as np
import pytest

from mesc3d_ros import output_guard


def ball(centre: tuple[float, float, float], radius: float) -> tuple[np.ndarray, ...]:
    """(points, centre, box centre, box size) of a 200-point sphere."""
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(200, 3))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    c = np.array(centre)
    return (c + radius * unit).astype(np.float32), c, c, np.full(3, 2 * radius)


def test_a_normal_object_passes():
    assert output_guard.object_problem(*ball((0.1, -0.2, 1.5), 0.1)) is None


@pytest.mark.parametrize('obj, cause', [
    (ball((0.0, 0.0, np.inf), 0.1), 'output_not_finite'),
    (ball((0.0, 0.0, 1.0), np.nan), 'output_not_finite'),
    (ball((0.0, 0.0, 0.05), 0.1), 'output_behind_camera'),  # straddles the camera plane
    (ball((0.0, 0.0, -2.0), 0.1), 'output_behind_camera'),
    (ball((0.0, 0.0, 30.0), 6.0), 'output_too_large'),
    (ball((1500.0, 0.0, 20.0), 0.1), 'output_too_far'),
])
def test_impossible_objects_are_refused_with_their_cause(obj, cause):
    problem = output_guard.object_problem(*obj)
    assert problem is not None and problem[0] == cause, problem


def test_the_cloud_of_a_frame_always_fits_the_transport():
    assert output_guard.objects_that_fit(2048, 32) == 32  # 1 MiB
    cap = output_guard.objects_that_fit(2048, 1000)
    assert cap == 128 and cap * 2048 * output_guard.CLOUD_POINT_BYTES <= output_guard.MAX_CLOUD_BYTES
    assert output_guard.objects_that_fit(10**7, 32) == 1  # one object is always allowed
