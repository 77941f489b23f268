"""
What the training loop reads: a config's training and validation sets, and their seeded order over the ranks.

Three sources of training samples, one loop (``loop.py``):

- images drawn and augmented on the fly from ``data.root`` (``data/dataset.py``), the default;
- the frozen pretrained trunk's cached features (``train.feature_cache``, ``feature_cache.py``), the CPU recipe;
- pre-drawn augmented crops from a pack (``train.pack``, ``crop_pack.py``), for a machine without the dataset.

Data order and augmentation depend only on (seed, epoch, position), never on the number of DataLoader workers or on
where a run was interrupted, so a resumed run repeats the uninterrupted one step for step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler

from mesc3d_ros.config import Config, TrainConfig
from mesc3d_training.crop_pack import PackedCrops, PackedValidation, read_pack_meta
from mesc3d_training.data import layout
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.distributed import Distributed
from mesc3d_training.feature_cache import CachedFeatures, build_cache


def training_set(cfg: Config, model: nn.Module, ctx: Distributed) -> Dataset:
    """
    Return the training set of ``cfg``.

    Items: ``points`` (G, 3), ``category`` and either ``image`` (3, S, S) or, with the feature cache, ``features``
    (C, h, w). The cache is built once (rank 0) from ``model``'s frozen trunk, which stops receiving gradients.
    """
    if cfg.train.pack:
        return PackedCrops(Path(cfg.train.pack), cfg)
    if cfg.train.feature_cache:
        encoder = model.image_encoder
        encoder.frozen_part.requires_grad_(False)
        if ctx.is_main:
            build_cache(cfg, encoder)
        if ctx.world_size > 1:
            dist.barrier()
        return CachedFeatures(build_cache(cfg, encoder), cfg)
    return ReconstructionDataset(cfg.data, 'train', cfg.model.image_size, train=True)


def validation_set(cfg: Config) -> Dataset:
    """Return the val split's evaluation items (``image``, ``points``, ``category``), from the pack if any."""
    if cfg.train.pack:
        return PackedValidation(Path(cfg.train.pack), cfg)
    return ReconstructionDataset(cfg.data, 'val', cfg.model.image_size, train=False)


def validation_indices(num_items: int, tc: TrainConfig) -> list[int]:
    """Return the whole validation split, or a fixed seeded subset of ``val_max_samples`` (same every epoch)."""
    if not tc.val_max_samples or tc.val_max_samples >= num_items:
        return list(range(num_items))
    chosen = np.random.default_rng(tc.seed).choice(num_items, tc.val_max_samples, replace=False)
    return sorted(int(i) for i in chosen)


def data_manifest_hash(cfg: Config) -> str:
    """Return the generated dataset's manifest hash; empty for layouts without a manifest (ShapeNet, Pix3D)."""
    if cfg.data.layout == 'generated':
        return layout.read_manifest(Path(cfg.data.root))['manifest_hash']
    return ''


def training_manifest_hash(cfg: Config) -> str:
    """Return the manifest hash of the data a run trains on: the pack's source, else the dataset's."""
    return read_pack_meta(Path(cfg.train.pack))['manifest_hash'] if cfg.train.pack else data_manifest_hash(cfg)


class SeededItems(Dataset):
    """
    Draw each item under its own seed, key = (index, seed).

    Augmentation then does not depend on which worker loads it (the datasets draw their randomness from torch's
    generator, ``data/sample.py``).
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        with torch.random.fork_rng(devices=[]):   # leaves the caller's generator (dropout) untouched
            torch.manual_seed(seed)
            return self.dataset[index]


class EpochBatches(Sampler):
    """
    Yield this rank's batches of (index, item seed).

    A permutation seeded by (seed, epoch), ``steps_per_epoch`` global batches of ``batch_size``, each split evenly
    over the ranks; ``set_epoch`` can start mid-epoch (resume).
    """

    def __init__(self, num_items: int, batch_size: int, steps_per_epoch: int, seed: int, ctx: Distributed):
        if steps_per_epoch * batch_size > num_items:
            raise ValueError(f'{steps_per_epoch} steps of {batch_size} need {steps_per_epoch * batch_size} items, '
                             f'the split has {num_items}')
        self.num_items, self.batch_size, self.steps_per_epoch, self.seed = num_items, batch_size, steps_per_epoch, seed
        self.rank, self.per_rank = ctx.rank, batch_size // ctx.world_size
        self.epoch = self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self):
        order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])))
        for step in range(self.start_step, self.steps_per_epoch):
            # Seeds of the whole global batch, then this rank's share: any number of ranks sees the same samples.
            seeds = np.random.SeedSequence([self.seed, self.epoch, step]).generate_state(self.batch_size)
            mine = range(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
            yield [(int(order[step * self.batch_size + i]), int(seeds[i])) for i in mine]
