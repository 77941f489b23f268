"""
The one crop-and-resize used by the dataset loader (training) and the node (deployment).

A detection box is padded, squared around its centre and resampled to the model's input size with a single affine
warp. Parts of the square window that fall outside the image are filled with a constant instead of shifting the
window, so the crop centre stays on the box centre: that is what the placement geometry (``geometry.py``) assumes
when it turns the crop's virtual camera into the real optical frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropWindow:
    """A square window in image pixels: centre (cx, cy) and side length, all float pixels."""

    cx: float
    cy: float
    side: float

    def affine(self, out_size: int) -> np.ndarray:
        """(2, 3) matrix mapping image pixel coordinates to crop pixel coordinates."""
        scale = out_size / self.side
        # Pixel centres: image pixel (cx, cy) lands on the crop's centre (out_size - 1) / 2.
        return np.array([[scale, 0.0, (out_size - 1) / 2 - scale * self.cx],
                         [0.0, scale, (out_size - 1) / 2 - scale * self.cy]], dtype=np.float64)


def square_window(box_xyxy: np.ndarray, padding: float) -> CropWindow:
    """Return the padded square around a box (x0, y0, x1, y1) in pixels; side = max(w, h) · (1 + padding)."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
        raise ValueError(f'degenerate box {box_xyxy!r}: need finite x0 < x1 and y0 < y1')
    if padding < 0:
        raise ValueError(f'crop padding must be >= 0, got {padding}')
    return CropWindow(cx=(x0 + x1) / 2, cy=(y0 + y1) / 2, side=max(x1 - x0, y1 - y0) * (1.0 + padding))


def clip_box(box_xyxy: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Return the part of a box inside a width × height image, or None when nothing (or a zero-area sliver) is left."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    # Python floats, not np.clip: four scalars, called per detection per frame (10 x cheaper).
    x0, x1 = min(max(x0, 0.0), float(width)), min(max(x1, 0.0), float(width))
    y0, y1 = min(max(y0, 0.0), float(height)), min(max(y1, 0.0), float(height))
    if not (x1 - x0 >= 1.0 and y1 - y0 >= 1.0):
        return None
    return np.array([x0, y0, x1, y1])


def crop_and_resize(image: np.ndarray, window: CropWindow, out_size: int,
                    interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """
    Resample ``window`` of an (H, W, C) or (H, W) image to (out_size, out_size[, C]); outside pixels are 0.

    INTER_AREA when shrinking avoids the aliasing a plain bilinear resize shows on small crops of large images.
    """
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'expected an (H, W[, C]) image, got shape {image.shape}')
    matrix = window.affine(out_size)
    flags = interpolation if window.side > out_size else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (out_size, out_size), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def to_model_input(crops_rgb_u8: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) uint8 RGB crops -> (B, 3, S, S) float32 in [0, 1], the contract's ``image`` tensor."""
    if crops_rgb_u8.ndim != 4 or crops_rgb_u8.shape[-1] != 3 or crops_rgb_u8.dtype != np.uint8:
        raise ValueError(f'expected (B, S, S, 3) uint8 crops, got {crops_rgb_u8.shape} {crops_rgb_u8.dtype}')
    return np.ascontiguousarray(crops_rgb_u8.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
