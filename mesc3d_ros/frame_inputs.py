"""
A matched frame's messages as the arrays the pipeline takes, with every frame-level input check in one place.

reconstruct_node's worker calls :func:`frame_inputs` on each frame it takes from the slot, then hands the arrays to
:meth:`mesc3d_ros.pipeline.ReconstructionPipeline.process`; the per-detection checks are the pipeline's. Problems
come back as :class:`mesc3d_ros.pipeline.Issue` s of the whole frame (``detection_index`` -1), which the node logs
and counts like the pipeline's. No rclpy: testable with plain messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mesc3d_ros.conversions import (CameraIntrinsics, Detections2D, depth_to_metres, detections_to_arrays,
                                    image_to_rgb)
from mesc3d_ros.frame_slot import Frame
from mesc3d_ros.pipeline import Issue

INFO_CAUSES = frozenset({'empty_detections'})
"""Causes that are worth a log line at info level only: the frame is answered normally."""


@dataclass(frozen=True, eq=False)
class FrameInputs:
    """What the pipeline needs of one frame."""

    rgb: np.ndarray
    """(H, W, 3) uint8 RGB."""
    intrinsics: CameraIntrinsics
    """The frame's camera, of the image's size."""
    depth: np.ndarray | None
    """(H, W) float32 metres registered to ``rgb``, 0 or NaN = no reading; None without (usable) depth."""
    detections: Detections2D


def frame_inputs(frame: Frame, depth_scale_m: float) -> tuple[FrameInputs | None, list[Issue]]:
    """
    Convert ``frame``'s messages and check that they belong together.

    Returns (inputs, issues); inputs is None when the frame cannot be answered (no valid camera_info, an image that
    cannot be read or whose size is not the camera's). Unusable depth is an issue, not a reason to drop the frame:
    the pipeline then places objects by the size prior.
    """
    intrinsics = frame.camera_info
    if not isinstance(intrinsics, CameraIntrinsics):
        return None, [Issue('no_camera_info', 'no valid camera_info stamped at or before the frame: frames are '
                            'dropped until one arrives on the camera_info topic', -1)]
    try:
        rgb = image_to_rgb(frame.image)
    except ValueError as exc:
        return None, [Issue('bad_image', f'frame dropped: {exc}', -1)]
    if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
        return None, [Issue('size_mismatch', f'image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info says '
                            f'{intrinsics.width}x{intrinsics.height}: frame dropped (intrinsics of another stream?)',
                            -1)]
    issues = []
    depth = None
    if frame.depth is not None:
        try:
            depth = depth_to_metres(frame.depth, depth_scale_m)
        except ValueError as exc:
            issues.append(Issue('bad_depth', f'depth ignored, using the size prior: {exc}', -1))
    detections = detections_to_arrays(frame.detections)
    if not detections.class_ids:
        issues.append(Issue('empty_detections', 'an empty detection array is answered with an empty cloud', -1))
    return FrameInputs(rgb, intrinsics, depth, detections), issues
