"""intrinsics_check: real cameras pass, the extreme-but-finite matrices of issue 17's attack campaign are refused."""

from __future__ import annotations

import numpy as np
import pytest

from mesc3d_ros.intrinsics_check import intrinsics_problem


def pinhole(fx: float, fy: float, cx: float, cy: float, skew: float = 0.0) -> np.ndarray:
    return np.array([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize('k, width, height', [
    (pinhole(525.0, 525.0, 319.5, 239.5), 640, 480),  # Kinect-style VGA
    (pinhole(1398.0, 1398.0, 960.0, 540.0), 1920, 1080),  # RealSense colour at 1080p
    (pinhole(180.0, 180.0, 320.0, 240.0), 640, 480),  # 120° wide angle
    (pinhole(20000.0, 20000.0, 1024.0, 768.0), 2048, 1536),  # 5.9° telephoto
    (pinhole(600.0, 1100.0, 300.0, 250.0, skew=0.5), 640, 480),  # anamorphic, slight skew
    (pinhole(500.0, 500.0, -100.0, 600.0), 640, 480),  # principal point off a cropped image
])
def test_real_cameras_pass(k, width, height):
    assert intrinsics_problem(k, width, height) is None


@pytest.mark.parametrize('k, expected', [
    (pinhole(1e-12, 1e-12, 320.0, 240.0), 'fx = 1e-12'),
    (pinhole(5e-324, 500.0, 320.0, 240.0), 'fx = 4.94066e-324'),
    (pinhole(1e300, 1e300, 320.0, 240.0), 'fx = 1e+300'),
    (pinhole(1e40, 1e40, 320.0, 240.0), 'fx = 1e+40'),
    (pinhole(500.0, 500.0, -1e5, 240.0), 'cx = -100000'),
    (pinhole(500.0, 500.0, 1e300, 240.0), 'cx = 1e+300'),
    (pinhole(500.0, 500.0, 320.0, 240.0, skew=1e300), 'skew'),
    (pinhole(500.0, 5000.0, 320.0, 240.0), 'fy / fx'),
    (pinhole(-500.0, 500.0, 320.0, 240.0), 'fx = -500'),
    (pinhole(np.nan, 500.0, 320.0, 240.0), 'not a finite'),
    (np.array([[500.0, 0, 320], [1.0, 500, 240], [0, 0, 1]]), 'not a pinhole matrix'),
    (np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 2]]), 'not a pinhole matrix'),
])
def test_implausible_matrices_are_refused_with_the_reason(k, expected):
    problem = intrinsics_problem(k, 640, 480)
    assert problem is not None and expected in problem, problem


def test_image_size_is_bounded():
    assert 'image size' in intrinsics_problem(pinhole(500.0, 500.0, 320.0, 240.0), 0, 480)
    assert 'image size' in intrinsics_problem(pinhole(500.0, 500.0, 320.0, 240.0), 70000, 480)
