"""
The crop pack: a dataset small enough to travel to a lent GPU machine, and the two datasets that read it.

The generated dataset (1.3 GB) cannot travel to a lent machine (64 MiB per call). A pack holds what
``mesc3d train`` reads of it instead (``train.pack``):

- training: ``draws`` augmented samples per training object, each drawn by the training loader itself
  (``ReconstructionDataset`` with ``train=True``: crop, box jitter, colour jitter, flip, viewer-frame rotation) and
  stored as a JPEG crop plus its 3×3 canonical→output matrix; every object's canonical unit-ball cloud is stored
  once (``POINTS_PER_OBJECT`` points, float16). :class:`PackedCrops` rebuilds the ground truth as a fresh subset of
  that cloud times the matrix, exactly what ``data/sample.py`` does for an image sample.
- validation: every evaluation crop of the val split (8-bit, so stored losslessly as PNG) with its ground-truth
  cloud, so best-epoch selection runs where the dataset is absent (:class:`PackedValidation`).
- ``meta``: the format version, the dataset's manifest hash (recorded in the trained model), and the image size and
  frame the crops were made for (checked against the training config).

The draws are seeded by ``train.seed``: the same config and dataset make the same pack.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mesc3d_ros.config import Config
from mesc3d_training.data import layout
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.data.sample import subsample, training_rng

log = logging.getLogger(__name__)

PACK_VERSION = 2
"""2: validation crops and ``meta`` added (version 1 held training draws only, read by the removed gpu_train.py)."""
POINTS_PER_OBJECT = 4096
"""Canonical points stored per training object; each training sample takes a fresh ``data.num_gt_points`` subset."""


def _encode(crop: torch.Tensor, extension: str, params: list[int]) -> bytes:
    """(3, S, S) float RGB in [0, 1] -> JPEG/PNG bytes of the 8-bit crop."""
    rgb = (crop.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)              # (S, S, 3)
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f'{extension} encoding of a {rgb.shape} crop failed')
    return encoded.tobytes()


def _concat(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes (T,) uint8, offsets (K + 1,) int64): blob k is bytes[offsets[k]:offsets[k + 1]]."""
    return np.frombuffer(b''.join(blobs), dtype=np.uint8), np.cumsum([0] + [len(b) for b in blobs])


def write_pack(cfg: Config, draws: int, jpeg_quality: int, out: Path) -> Path:
    """Draw the pack of ``cfg``'s dataset into ``out`` (.npz); returns ``out``."""
    if draws < 1:
        raise ValueError(f'draws={draws} must be >= 1')
    torch.manual_seed(cfg.train.seed)   # the loader draws its augmentation from torch's generator
    train_set = ReconstructionDataset(cfg.data, 'train', cfg.model.image_size, train=True)
    object_ids = train_set.object_ids
    index_of = {object_id: i for i, object_id in enumerate(object_ids)}
    rng = np.random.default_rng(cfg.train.seed)
    clouds = np.stack([subsample(train_set.canonical_points(o), POINTS_PER_OBJECT, rng)
                       for o in object_ids]).astype(np.float16)                         # (O, P, 3) canonical
    jpegs, rotations, objects = [], [], []
    for _ in range(draws):
        for item in tqdm(range(len(train_set)), desc='training draws', mininterval=2.0):
            sample = train_set[item]
            jpegs.append(_encode(sample['image'], '.jpg', [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]))
            rotations.append(sample['rotation'])                                        # (3, 3) canonical -> output
            objects.append(index_of[sample['object_id']])
    val_set = ReconstructionDataset(cfg.data, 'val', cfg.model.image_size, train=False)
    val = [val_set[i] for i in range(len(val_set))]
    train_bytes, train_offsets = _concat(jpegs)
    val_bytes, val_offsets = _concat([_encode(v['image'], '.png', []) for v in val])
    meta = {'version': PACK_VERSION, 'manifest_hash': layout.read_manifest(Path(cfg.data.root))['manifest_hash'],
            'image_size': cfg.model.image_size, 'frame': cfg.data.frame, 'draws': draws, 'seed': cfg.train.seed}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, meta=np.asarray(json.dumps(meta)),
             train_jpeg_bytes=train_bytes, train_jpeg_offsets=train_offsets, train_rotations=np.stack(rotations),
             train_objects=np.asarray(objects, dtype=np.int32), clouds=clouds, object_ids=np.asarray(object_ids),
             object_categories=np.asarray([train_set.category_of(o) for o in object_ids]),
             val_png_bytes=val_bytes, val_png_offsets=val_offsets,
             val_points=np.stack([v['points'].numpy() for v in val]),                   # (V, G, 3) output frame
             val_categories=np.asarray([v['category'] for v in val]))
    log.info('%d training draws of %d objects and %d validation crops -> %s (%.1f MB)', len(jpegs), len(object_ids),
             len(val), out, out.stat().st_size / 1e6)
    return out


def read_pack_meta(path: Path) -> dict:
    """Return the pack's ``meta`` (see the module docstring); raise ValueError for another format version."""
    with np.load(path) as pack:
        meta = json.loads(str(pack['meta'])) if 'meta' in pack.files else {'version': 1}
    if meta['version'] != PACK_VERSION:
        raise ValueError(f'{path}: crop pack version {meta["version"]}, this code reads {PACK_VERSION}: '
                         'remake it with scripts/pack_crops.py')
    return meta


def check_pack(path: Path, cfg: Config) -> dict:
    """Return the pack's meta after checking that it was made for ``cfg``'s crops (ValueError naming the field)."""
    meta = read_pack_meta(path)
    for key, wanted in (('image_size', cfg.model.image_size), ('frame', cfg.data.frame)):
        if meta[key] != wanted:
            raise ValueError(f'{path}: crops made for {key}={meta[key]!r}, the config has {wanted!r}')
    return meta


def _decode(data: np.ndarray, offsets: np.ndarray, index: int) -> torch.Tensor:
    """Crop ``index`` as (3, S, S) float32 RGB in [0, 1]."""
    bgr = cv2.imdecode(data[offsets[index]:offsets[index + 1]], cv2.IMREAD_COLOR)        # (S, S, 3) uint8
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))).float() / 255.0


class PackedCrops(Dataset):
    """
    Training items of a pack.

    ``image`` (3, S, S) float32 in [0, 1], ``points`` (G, 3) float32 in the draw's output frame (a fresh subset per
    access, from torch's generator), ``category`` str.
    """

    def __init__(self, path: Path, cfg: Config):
        check_pack(path, cfg)
        with np.load(path) as pack:
            self.data, self.offsets = pack['train_jpeg_bytes'], pack['train_jpeg_offsets']
            self.rotations = pack['train_rotations'].astype(np.float64)              # (M, 3, 3)
            self.objects = pack['train_objects']                                     # (M,) index into clouds
            self.clouds = pack['clouds'].astype(np.float64)                          # (O, P, 3) canonical
            self.categories = [str(c) for c in pack['object_categories']]
        self.num_gt_points = cfg.data.num_gt_points

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, index: int) -> dict:
        obj = int(self.objects[index])
        points = subsample(self.clouds[obj], self.num_gt_points, training_rng()) @ self.rotations[index].T
        return {'image': _decode(self.data, self.offsets, index),
                'points': torch.from_numpy(points.astype(np.float32)), 'category': self.categories[obj]}


class PackedValidation(Dataset):
    """The val split's evaluation items from a pack: ``image``, ``points`` (G, 3) float32, ``category``."""

    def __init__(self, path: Path, cfg: Config):
        check_pack(path, cfg)
        with np.load(path) as pack:
            self.data, self.offsets = pack['val_png_bytes'], pack['val_png_offsets']
            self.points = pack['val_points']                                         # (V, G, 3) float32
            self.categories = [str(c) for c in pack['val_categories']]

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> dict:
        return {'image': _decode(self.data, self.offsets, index), 'points': torch.from_numpy(self.points[index]),
                'category': self.categories[index]}
