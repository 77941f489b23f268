"""
The CPU-first recipe's feature cache: the frozen image trunk's output for every training view and draw, on disk.

On a 2-core CPU the pretrained image trunk costs as much per sample as everything after it, and it does not train.
So it runs once per (training object, rendered view, augmentation draw): each draw is the training loader's own
sample (``ReconstructionDataset.view_sample``: box jitter, colour jitter, flip), seeded by (train seed, object, view,
draw), and the trunk's map is stored as float16. Training (``loop.py`` with ``train.feature_cache``) then reads
:class:`CachedFeatures`: the cached map, the draw's canonical→output rotation (flip included) and a fresh subset of the
object's canonical cloud per access, so the ground truth is exactly the one the image sample would have had.

A cache lives in ``<train.feature_cache>/<key>/``: the key is a hash of everything the features depend on (the
trunk's weights, the backbone and image size, the dataset's manifest hash, the split, the augmentation settings,
the number of draws and the seed, and this format's version), so a change of any of them builds a new cache instead
of reusing a stale one. Files: ``features.npy`` (E, C, h, w) float16, ``rotations.npy`` (E, 3, 3) float32,
``index.json`` (the key's fields, object ids, per-entry object index and view). A cache is written to a temporary
folder and renamed when complete, so an interrupted build leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mesc3d_ros.config import Config
from mesc3d_training.data import layout
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.data.sample import subsample, training_rng

log = logging.getLogger(__name__)

CACHE_VERSION = 1
FEATURES_FILE, ROTATIONS_FILE, INDEX_FILE = 'features.npy', 'rotations.npy', 'index.json'
BUILD_BATCH = 64


def trunk_digest(trunk: torch.nn.Module) -> str:
    """sha256 of the trunk's state dict (names, shapes and values): the cache's identity of the encoder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(trunk.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_fields(cfg: Config, trunk: torch.nn.Module, split: str) -> dict:
    """Everything the cached features depend on (the key is their hash)."""
    data = asdict(cfg.data)
    manifest_hash = layout.read_manifest(Path(cfg.data.root))['manifest_hash']
    return {'version': CACHE_VERSION, 'backbone': cfg.model.image_backbone, 'image_size': cfg.model.image_size,
            'trunk_sha256': trunk_digest(trunk), 'manifest_hash': manifest_hash, 'split': split,
            'draws': cfg.train.cache_draws, 'seed': cfg.train.seed,
            'data': {k: data[k] for k in ('frame', 'box_jitter', 'color_jitter', 'crop_padding', 'categories',
                                          'held_out_categories', 'max_objects_per_split')}}


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class _Draws(Dataset):
    """(object, view, draw) -> the training loader's augmented sample of that view, seeded by the triple."""

    def __init__(self, dataset: ReconstructionDataset, entries: list[tuple[int, int, int]], seed: int):
        self.dataset, self.entries, self.seed = dataset, entries, seed
        self.ids = dataset.object_ids

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        obj, view, draw = self.entries[index]
        object_key = int.from_bytes(hashlib.sha256(self.ids[obj].encode()).digest()[:4], 'little')
        seed = int(np.random.SeedSequence([self.seed, object_key, view, draw]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sample = self.dataset.view_sample(self.ids[obj], view)
        return {'image': sample['image'], 'rotation': torch.from_numpy(sample['rotation'])}


@torch.inference_mode()
def build_cache(cfg: Config, encoder: torch.nn.Module, split: str = 'train') -> Path:
    """Return the cache folder for ``cfg``'s training split and ``encoder`` (an ``ImageEncoder``), built if missing."""
    trunk = encoder.frozen_part
    fields = cache_fields(cfg, trunk, split)
    folder = Path(cfg.train.feature_cache) / cache_key(fields)
    if (folder / INDEX_FILE).is_file():
        log.info('feature cache %s: reused', folder)
        return folder
    dataset = ReconstructionDataset(cfg.data, split, cfg.model.image_size, train=True)
    if cfg.data.layout != 'generated':
        raise ValueError(f'train.feature_cache needs the generated layout (every rendered view), not '
                         f'{cfg.data.layout!r}')
    entries = [(o, v, d) for o in range(len(dataset.object_ids)) for v in range(dataset.num_views)
               for d in range(cfg.train.cache_draws)]
    loader = DataLoader(_Draws(dataset, entries, cfg.train.seed), batch_size=BUILD_BATCH,
                        num_workers=cfg.train.num_workers)
    tmp = folder.with_name(folder.name + '.partial')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    was_training = encoder.training
    encoder.eval()
    features = rotations = None
    started, done = time.perf_counter(), 0
    for batch in loader:
        maps = encoder.trunk_features(batch['image'])                      # (B, C, h, w) float32
        if features is None:
            features = np.lib.format.open_memmap(tmp / FEATURES_FILE, mode='w+', dtype=np.float16,
                                                 shape=(len(entries), *maps.shape[1:]))
            rotations = np.zeros((len(entries), 3, 3), dtype=np.float32)
        features[done:done + len(maps)] = maps.numpy().astype(np.float16)
        rotations[done:done + len(maps)] = batch['rotation'].numpy()
        done += len(maps)
        if done % (BUILD_BATCH * 20) == 0 or done == len(entries):
            log.info('feature cache: %d / %d draws, %.1f draws/s', done, len(entries),
                     done / (time.perf_counter() - started))
    encoder.train(was_training)
    features.flush()
    del features
    np.save(tmp / ROTATIONS_FILE, rotations)
    index = {**fields, 'objects': dataset.object_ids,
             'categories': [dataset.category_of(i) for i in dataset.object_ids],
             'entry_object': [o for o, _, _ in entries], 'entry_view': [v for _, v, _ in entries],
             'build_s': round(time.perf_counter() - started, 1)}
    (tmp / INDEX_FILE).write_text(json.dumps(index))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log.info('feature cache %s: %d draws built in %.0f s', folder, len(entries), index['build_s'])
    return folder


class CachedFeatures(Dataset):
    """
    Training items from a cache.

    ``features`` (C, h, w) float32, ``points`` (G, 3) float32 in the draw's output frame (a fresh subset per access,
    from torch's generator), ``category`` str.
    """

    def __init__(self, folder: Path, cfg: Config):
        self.index = json.loads((Path(folder) / INDEX_FILE).read_text())
        self.features = np.load(Path(folder) / FEATURES_FILE, mmap_mode='r')   # (E, C, h, w) float16
        self.rotations = np.load(Path(folder) / ROTATIONS_FILE)                # (E, 3, 3) canonical -> output
        self.entry_object = np.asarray(self.index['entry_object'])
        self.num_gt_points = cfg.train.cache_gt_points or cfg.data.num_gt_points
        dataset = ReconstructionDataset(cfg.data, self.index['split'], cfg.model.image_size, train=True)
        self.canonical = [dataset.canonical_points(i).astype(np.float32) for i in self.index['objects']]

    def __len__(self) -> int:
        return len(self.entry_object)

    def __getitem__(self, index: int) -> dict:
        obj = int(self.entry_object[index])
        points = subsample(self.canonical[obj], self.num_gt_points, training_rng()) @ self.rotations[index].T
        return {'features': torch.from_numpy(self.features[index].astype(np.float32)),
                'points': torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
                'category': self.index['categories'][obj]}
