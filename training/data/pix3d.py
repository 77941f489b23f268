"""
Pix3D (Sun et al., CVPR 2018): real photos aligned with IKEA models, as an evaluation set in our sample format.

``<root>/pix3d.json`` lists one entry per photo: ``img``, ``mask``, ``category``, ``bbox`` (x0, y0, x1, y1 pixels),
``model`` (.obj), ``rot_mat``, ``trans_mat``, ``focal_length`` (mm, sensor width fixed to 32 mm), ``img_size``,
``truncated``, ``occluded``. Pix3D's camera frame is x left, y up, z forward (xingyuansun/pix3d#2), so the OpenCV
pose is ``diag(-1, -1, 1) · rot_mat``; intrinsics are f = focal_length / 32 · width, principal point at the image
centre (facebookresearch/meshrcnn#8).

Only the ``test`` split exists (every untruncated, unoccluded photo, the usual Pix3D protocol): the set is for
evaluating models trained elsewhere. The crop is cut around the annotated box with the node's crop function; the
ground truth is sampled from the model, unit-ball normalised in the model frame, and rotated into the crop's virtual
camera for ``frame: viewer``. The model units are not metres, so ``scale_m`` and ``center_cam_m`` are NaN.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import trimesh

from mesc3d_ros.config import DataConfig
from mesc3d_training.data.sample import build_sample, eval_seed, read_rgb, training_rng, unit_ball

PIX3D_CAMERA_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])
SENSOR_WIDTH_MM = 32.0
MODEL_SAMPLES = 16384


def pix3d_intrinsics(focal_length_mm: float, width: int, height: int) -> np.ndarray:
    focal_px = focal_length_mm / SENSOR_WIDTH_MM * width
    return np.array([[focal_px, 0.0, (width - 1) / 2], [0.0, focal_px, (height - 1) / 2], [0.0, 0.0, 1.0]])


class Pix3DDataset(torch.utils.data.Dataset):
    def __init__(self, cfg: DataConfig, split: str, image_size: int, train: bool):
        if split != 'test':
            raise ValueError(f'Pix3D serves only the test split (evaluation of models trained elsewhere), '
                             f'got {split!r}')
        self.cfg, self.image_size, self.train = cfg, image_size, train
        self.root = Path(cfg.root)
        path = self.root / 'pix3d.json'
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f'{path}: cannot read the Pix3D annotation file: {exc}') from exc
        known = sorted({e['category'] for e in entries})
        wanted = set(cfg.categories) or set(known)
        self.categories = tuple(c for c in known if c in wanted)
        self.category_sizes_m = {}
        self._entries = [e for e in sorted(entries, key=lambda e: e['img'])
                         if e['category'] in self.categories and not e.get('truncated') and not e.get('occluded')]
        if cfg.max_objects_per_split:
            self._entries = self._entries[:cfg.max_objects_per_split]
        if not self._entries:
            raise ValueError(f'{path}: no untruncated, unoccluded photo in categories {list(self.categories)}')
        self._clouds: dict[str, np.ndarray] = {}

    def _canonical(self, model: str) -> np.ndarray:
        """(16384, 3) unit-ball samples of a model, seeded by its path; cached (each model backs many photos)."""
        if model not in self._clouds:
            mesh = trimesh.load(self.root / model, force='mesh', process=False)
            seed = int.from_bytes(hashlib.sha256(model.encode()).digest()[:8], 'little')
            points, _ = trimesh.sample.sample_surface(mesh, MODEL_SAMPLES, seed=np.random.default_rng(seed))
            self._clouds[model] = unit_ball(np.asarray(points, dtype=np.float64))[0]
        return self._clouds[model]

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> dict:
        entry = self._entries[index]
        object_id = Path(entry['img']).stem
        rng = training_rng() if self.train else np.random.default_rng(eval_seed(f'pix3d/{entry["img"]}', 0))
        image = read_rgb(self.root / entry['img'])
        height, width = image.shape[:2]
        rotation = PIX3D_CAMERA_TO_OPENCV @ np.asarray(entry['rot_mat'], dtype=np.float64).reshape(3, 3)
        return build_sample(
            image_rgb=image, box=np.asarray(entry['bbox'], dtype=np.float64), window=None,
            canonical=self._canonical(entry['model']), rotation_cam_obj=rotation,
            K=pix3d_intrinsics(float(entry['focal_length']), width, height), cfg=self.cfg,
            image_size=self.image_size, train=self.train, rng=rng, category=entry['category'],
            category_index=self.categories.index(entry['category']), object_id=f'{entry["category"]}/{object_id}',
            view=0)
