"""
The reconstruction dataset: one torch Dataset over our generated layout and over a real ShapeNet download.

``ReconstructionDataset(cfg, split, image_size, train)`` serves the sample dict of ``sample.py``. Splits: ``train``,
``val``, ``test`` and, for the generated layout with ``cfg.held_out_categories``, ``zero_shot`` (the held-out
categories, all their objects). With ``train=True`` an item is an object and each access draws a new view, crop
jitter, colour jitter, flip (viewer frame only) and ground-truth subset; with ``train=False`` an item is a fixed
(object, view) pair with a centred crop and a subset seeded by (object id, view), so evaluation is deterministic.
Pix3D has its own class with the same item format (``pix3d.py``); :func:`open_dataset` picks by ``cfg.layout``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mesc3d_ros.config import DataConfig
from mesc3d_ros.preprocess import CropWindow
from mesc3d_training.data import layout, shapenet
from mesc3d_training.data.categories import SPLITS, UNSEEN_SPLIT, ZERO_SHOT_SPLIT
from mesc3d_training.data.sample import build_sample, eval_seed, read_mask, read_rgb, training_rng, unit_ball
from mesc3d_training.data.scene import mask_box

log = logging.getLogger(__name__)
EVAL_SPLITS = SPLITS + (UNSEEN_SPLIT, ZERO_SHOT_SPLIT)


class ReconstructionDataset(torch.utils.data.Dataset):
    """Generated layout (``cfg.layout == 'generated'``) or AtlasNet ShapeNet (``'shapenet'``)."""

    def __init__(self, cfg: DataConfig, split: str, image_size: int, train: bool):
        if split not in EVAL_SPLITS:
            raise ValueError(f'unknown split {split!r}; choose from {list(EVAL_SPLITS)}')
        self.cfg, self.split, self.image_size, self.train = cfg, split, image_size, train
        self.root = Path(cfg.root)
        if cfg.layout == 'generated':
            self._init_generated()
        elif cfg.layout == 'shapenet':
            self._init_shapenet()
        else:
            raise ValueError(f'layout {cfg.layout!r} is not served by ReconstructionDataset; use open_dataset')
        if not self._items:
            raise ValueError(f'{self.root}: split {split!r} is empty for categories {list(self.categories)}')

    # ---- generated layout ------------------------------------------------------------------------------------
    def _init_generated(self) -> None:
        manifest = layout.read_manifest(self.root)
        known = sorted(manifest['categories'])
        unknown = sorted(set(self.cfg.categories) - set(known))
        if unknown:
            raise ValueError(f'{self.root}: categories {unknown} are not in the dataset; it has {known}')
        absent = sorted(set(self.cfg.held_out_categories) - set(known))
        if absent:  # a dataset made elsewhere need not have them: there is simply nothing to hold out
            log.warning('%s: held-out categories %s are not in the dataset; nothing of them to hold out',
                        self.root, absent)
        self.categories = tuple(c for c in known if not self.cfg.categories or c in self.cfg.categories)
        self.category_sizes_m = {c: manifest['categories'][c]['size_m'] for c in self.categories}
        held_out = set(self.cfg.held_out_categories)
        if self.split == ZERO_SHOT_SPLIT:
            if not held_out:
                raise ValueError('split zero_shot needs DataConfig.held_out_categories (e.g. [food, tool])')
            ids = [i for i, o in manifest['objects'].items()
                   if o['category'] in held_out and o['split'] != UNSEEN_SPLIT]  # unseen objects stay unseen
        else:
            listed = manifest['splits'].get(self.split, [])
            ids = [i for i in listed if manifest['objects'][i]['category'] not in held_out]
            if len(ids) < len(listed):
                moved = sorted({manifest['objects'][i]['category'] for i in listed} & held_out)
                log.info('%s split %s: %d objects of the held-out categories %s are left out (they are zero_shot)',
                         self.root, self.split, len(listed) - len(ids), moved)
        ids = sorted(i for i in ids if manifest['objects'][i]['category'] in self.categories)
        if self.cfg.max_objects_per_split:
            ids = ids[:self.cfg.max_objects_per_split]
        self._objects = {i: manifest['objects'][i]['category'] for i in ids}
        views = min(self.cfg.eval_views, manifest['views'])
        self._num_views = manifest['views']
        self._items = [(i, None) for i in ids] if self.train else [(i, v) for i in ids for v in range(views)]

    def _generated_item(self, object_id: str, view: int | None) -> dict:
        category = self._objects[object_id]
        rng = training_rng() if self.train else np.random.default_rng(eval_seed(object_id, view))
        if view is None:
            view = int(rng.integers(self._num_views))
        cams = layout.read_cameras(layout.cameras_path(self.root, category, object_id))
        image = read_rgb(layout.rgb_path(self.root, category, object_id, view))
        mask = read_mask(layout.mask_path(self.root, category, object_id, view))
        canonical = self.canonical_points(object_id)
        # The stored detector-like box when the generator drew one (visible part, jittered, clipped at the border),
        # else the mask's box (datasets made elsewhere).
        box = cams.boxes[view] if cams.boxes is not None else mask_box(mask)
        return build_sample(
            image_rgb=image, box=box, window=None, canonical=canonical,
            rotation_cam_obj=cams.T_cam_obj[view, :3, :3], K=cams.K[view], cfg=self.cfg, image_size=self.image_size,
            train=self.train, rng=rng, category=category, category_index=self.categories.index(category),
            object_id=object_id, view=view, scale_m=cams.scale_m, center_cam_m=cams.centre_in_camera(view))

    @property
    def object_ids(self) -> list[str]:
        """Return the split's object ids (generated layout)."""
        return list(self._objects)

    @property
    def num_views(self) -> int:
        """Return the number of rendered views per object (generated layout)."""
        return self._num_views

    def category_of(self, object_id: str) -> str:
        return self._objects[object_id]

    def view_sample(self, object_id: str, view: int) -> dict:
        """
        Return the sample of one rendered view (generated layout).

        Augmented when ``train``, from torch's generator.
        """
        return self._generated_item(object_id, view)

    def canonical_points(self, object_id: str) -> np.ndarray:
        """(P, 3) float64 the object's dense canonical unit-ball cloud (generated layout)."""
        return np.load(layout.points_path(self.root, self._objects[object_id], object_id)).astype(np.float64)

    # ---- ShapeNet --------------------------------------------------------------------------------------------
    def _init_shapenet(self) -> None:
        if self.split == ZERO_SHOT_SPLIT:
            raise ValueError('the ShapeNet layout has no zero_shot split')
        index = shapenet.index_shapenet(self.root)
        known = sorted({o.category for objects in index.values() for o in objects})
        objects = index[self.split]
        wanted = set(self.cfg.categories) or set(known)
        self.categories = tuple(c for c in known if c in wanted)
        self.category_sizes_m = {}  # ShapeNet is not metric
        objects = [o for o in objects if o.category in self.categories and o.category not in
                   self.cfg.held_out_categories]
        if self.cfg.max_objects_per_split:
            objects = objects[:self.cfg.max_objects_per_split]
        if self.cfg.frame == 'viewer' and objects and shapenet.read_r2n2_metadata(objects[0].rendering_dir) is None:
            raise ValueError(f'{objects[0].rendering_dir}: no {shapenet.METADATA_FILE}, so no camera and no viewer '
                             'frame; use frame: canonical for this ShapeNet copy')
        self._shapenet = objects
        self._items = [(index, None if self.train else shapenet.TEST_VIEW) for index in range(len(objects))]

    def _shapenet_item(self, index: int, view: int | None) -> dict:
        obj = self._shapenet[index]
        rng = training_rng() if self.train else np.random.default_rng(eval_seed(obj.model_id, view))
        margin = shapenet.IMAGE_SIZE - shapenet.CROP_SIZE
        if view is None:  # training: view 1-23 (view 0 is the test view) and a random 127-px crop
            view = int(rng.integers(1, shapenet.NUM_VIEWS))
            x0, y0 = (int(v) for v in rng.integers(0, margin + 1, 2))
        else:
            x0 = y0 = margin // 2
        half = (shapenet.CROP_SIZE - 1) / 2  # pixel-centre coordinates of the crop's middle pixel
        window = CropWindow(cx=x0 + half, cy=y0 + half, side=float(shapenet.CROP_SIZE))
        box = np.array([x0, y0, x0 + shapenet.CROP_SIZE, y0 + shapenet.CROP_SIZE], dtype=np.float64)
        points = np.load(obj.points_file)[:, :3].astype(np.float64)
        canonical, _, _ = unit_ball(points)
        metadata = shapenet.read_r2n2_metadata(obj.rendering_dir)
        rotation = None if metadata is None else shapenet.r2n2_rotation(metadata[view, 0], metadata[view, 1])
        image = read_rgb(obj.rendering_dir / f'{view:02d}.png')
        return build_sample(
            image_rgb=image, box=box, window=window, canonical=canonical, rotation_cam_obj=rotation, K=None,
            cfg=self.cfg, image_size=self.image_size, train=self.train, rng=rng, category=obj.category,
            category_index=self.categories.index(obj.category), object_id=obj.model_id, view=view)

    # ---- torch Dataset ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict:
        key, view = self._items[index]
        if self.cfg.layout == 'generated':
            return self._generated_item(key, view)
        return self._shapenet_item(key, view)


def open_dataset(cfg: DataConfig, split: str, image_size: int, train: bool) -> torch.utils.data.Dataset:
    """Return the dataset for ``cfg.layout``: ReconstructionDataset, or Pix3DDataset for ``pix3d``."""
    if cfg.layout == 'pix3d':
        from mesc3d_training.data.pix3d import Pix3DDataset

        return Pix3DDataset(cfg, split, image_size, train)
    return ReconstructionDataset(cfg, split, image_size, train)
