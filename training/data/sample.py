"""
One training/evaluation sample, built the same way for every layout (generated, ShapeNet, Pix3D).

A sample is a dict (the default collate stacks it):

- ``image``          (3, S, S) float32 RGB in [0, 1]: the square crop the node would cut from the same box.
- ``points``         (G, 3) float32 ground truth, unit ball (centred, max norm 1) in ``DataConfig.frame``.
- ``category`` str, ``category_index`` int, ``object_id`` str, ``view`` int.
- ``rotation``       (3, 3) float32: canonical unit-ball points -> ``points`` (identity for ``canonical``).
- ``K``              (3, 3) float32 intrinsics of the full image, OpenCV pixel centres (NaN when unknown).
- ``box``            (4,) float32 x0, y0, x1, y1 the crop was cut around (pixel-edge coordinates, before padding).
- ``scale_m``        float32 metres per unit-ball unit (NaN when unknown).
- ``center_cam_m``   (3,) float32 the unit ball's centre in the real optical frame, metres (NaN when unknown).
- ``flipped``        bool: the crop and the viewer-frame points were mirrored (training only).

``viewer`` frame: the crop's *virtual camera* (``mesc3d_ros.geometry.virtual_camera_rotation`` at the crop centre),
the frame the node's placement assumes: ``points = canonical @ (R_vᵀ R_cam_obj)ᵀ``. Mirroring the crop left-right
mirrors that frame's x axis exactly, so viewer-frame training flips both; canonical-frame ground truth has no
mirror plane tied to the image, so it is never flipped (upstream flips the image but not the cloud, method.md §5).
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import torch
from torchvision.transforms import ColorJitter

from mesc3d_ros.config import DataConfig
from mesc3d_ros.geometry import virtual_camera_rotation
from mesc3d_ros.preprocess import CropWindow, crop_and_resize, square_window

NAN3 = np.full(3, np.nan, dtype=np.float32)
NAN33 = np.full((3, 3), np.nan, dtype=np.float32)


def eval_seed(object_id: str, view: int) -> int:
    """Seed of the evaluation point subset: fixed per (object, view), so metrics are reproducible."""
    return int.from_bytes(hashlib.sha256(f'{object_id}:{view}'.encode()).digest()[:8], 'little')


def training_rng() -> np.random.Generator:
    """Fresh randomness per access, drawn from torch's generator so torch.manual_seed (and worker seeding) rule it."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def unit_ball(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Normalise to the unit ball (method.md §6): (points - centroid) / max norm; returns (points, centroid, scale)."""
    centroid = points.mean(axis=0)
    scale = float(np.linalg.norm(points - centroid, axis=1).max())
    if not scale > 0:
        raise ValueError('cannot normalise a point cloud whose points all coincide')
    return (points - centroid) / scale, centroid, scale


def subsample(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` rows without replacement (with replacement only when the cloud is smaller)."""
    index = rng.choice(len(points), count, replace=len(points) < count)
    return points[index]


def jitter_box(box: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Shift the centre by up to ``amount`` of the box size and scale each side by exp(±amount)."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2 + rng.uniform(-amount, amount) * width
    cy = (y0 + y1) / 2 + rng.uniform(-amount, amount) * height
    width *= np.exp(rng.uniform(-amount, amount))
    height *= np.exp(rng.uniform(-amount, amount))
    return np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])


def viewer_rotation(K: np.ndarray, window: CropWindow, rotation_cam_obj: np.ndarray) -> np.ndarray:
    """(3, 3) canonical -> the crop's virtual camera: R_vᵀ R_cam_obj."""
    return virtual_camera_rotation(K, window.cx, window.cy).T @ rotation_cam_obj


def build_sample(*, image_rgb: np.ndarray, box: np.ndarray, window: CropWindow | None, canonical: np.ndarray,
                 rotation_cam_obj: np.ndarray | None, K: np.ndarray | None, cfg: DataConfig, image_size: int,
                 train: bool, rng: np.random.Generator, category: str, category_index: int, object_id: str,
                 view: int, scale_m: float = float('nan'), center_cam_m: np.ndarray = NAN3) -> dict:
    """
    Crop, augment and package one sample (see the module docstring for the keys).

    ``canonical`` is the dense unit-ball cloud; ``box`` is jittered in training unless ``window`` (ShapeNet's fixed
    crops) overrides the box-derived crop.
    ``rotation_cam_obj`` None means the camera is unknown: only the canonical frame is possible then.
    """
    if window is None:
        if train and cfg.box_jitter > 0:
            box = jitter_box(box, cfg.box_jitter, rng)
        window = square_window(box, cfg.crop_padding)
    crop = crop_and_resize(image_rgb, window, image_size)  # (S, S, 3) uint8
    points = subsample(canonical, cfg.num_gt_points, rng).astype(np.float64)  # (G, 3) unit ball, canonical
    if cfg.frame == 'viewer':
        if rotation_cam_obj is None:
            raise ValueError(f'{object_id}: no camera pose, so no viewer frame; use frame: canonical')
        # Without intrinsics (ShapeNet) the crop is centred on the principal point: the virtual camera is the camera.
        rotation = rotation_cam_obj if K is None else viewer_rotation(K, window, rotation_cam_obj)
    else:
        rotation = np.eye(3)
    flipped = bool(train and cfg.frame == 'viewer' and rng.uniform() < 0.5)
    if flipped:
        crop = crop[:, ::-1]
        rotation = np.diag([-1.0, 1.0, 1.0]) @ rotation  # a mirror, not a rotation: x -> -x in the viewer frame
    points = points @ rotation.T
    image = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float() / 255.0  # (3, S, S)
    if train and cfg.color_jitter > 0:
        strength = cfg.color_jitter
        image = ColorJitter(brightness=strength, contrast=strength, saturation=strength,
                            hue=min(strength / 6, 0.5))(image)
    return {
        'image': image,
        'points': torch.from_numpy(points.astype(np.float32)),
        'category': category,
        'category_index': category_index,
        'object_id': object_id,
        'view': view,
        'rotation': rotation.astype(np.float32),
        'K': NAN33 if K is None else np.asarray(K, dtype=np.float32),
        'box': np.asarray(box, dtype=np.float32),
        'scale_m': np.float32(scale_m),
        'center_cam_m': np.asarray(center_cam_m, dtype=np.float32),
        'flipped': flipped,
    }


def read_rgb(path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PNG/JPEG (grey, RGBA or palette images are converted; alpha is dropped)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert('RGB'))


def read_mask(path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OSError(f'{path}: cannot read mask')
    return mask > 127
