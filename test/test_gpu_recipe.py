"""
The GPU recipe is ``mesc3d train`` on a crop pack: the pack itself, and what the one training loop promises.

``scripts/pack_crops.py`` draws a pack from the tiny generated dataset; ``mesc3d train --pack PACK --device cpu
--class-table RUN`` trains from it with ``data.root`` pointing nowhere, as on a lent GPU machine that the dataset
cannot reach. The run then shows the loop's promises: the schedule of ``schedule.py`` step by step, a falling loss on
a tiny data set it can overfit, and the best validation epoch kept as the deployable weights.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mesc3d_ros.config import load_config, save_config
from mesc3d_ros.contract import ClassEntry
from mesc3d_training.checkpoint import load_model
from mesc3d_training.crop_pack import PackedCrops, PackedValidation
from mesc3d_training.data import layout
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.distributed import Distributed
from mesc3d_training.loop import validate
from mesc3d_training.prompt_learning import TABLE_FILE, ClassTable
from mesc3d_training.train import main
from train_fixtures import SPLITS, make_tiny_dataset, tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
EPOCHS, DRAWS, BATCH = 6, 2, 2
TRAIN_OBJECTS = len(SPLITS['train']) - 1      # pybullet_jenga is a toy, the held-out (zero-shot) category
STEPS_PER_EPOCH = TRAIN_OBJECTS * DRAWS // BATCH
BASE_LR, WARMUP_LR, MIN_LR = 3e-3, 1e-5, 1e-6


@pytest.fixture(scope='module')
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp('recipe')
    cfg = tiny_config(make_tiny_dataset(folder / 'data'), epochs=EPOCHS, batch_size=BATCH, lr=BASE_LR,
                      warmup_lr=WARMUP_LR, min_lr=MIN_LR, warmup_epochs=1)
    return save_config(cfg, folder / 'tiny.yaml')


@pytest.fixture(scope='module')
def pack(config_path: Path) -> Path:
    out = config_path.parent / 'pack.npz'
    result = subprocess.run([sys.executable, str(REPO / 'scripts' / 'pack_crops.py'), str(config_path), '--draws',
                             str(DRAWS), '--out', str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope='module')
def stage_a(config_path: Path) -> Path:
    """Make a run folder holding a class table of unrelated unit vectors (stage (a) is not tested here)."""
    cfg = load_config(config_path)
    train_set = ReconstructionDataset(cfg.data, 'train', cfg.model.image_size, train=False)
    names = sorted({train_set.category_of(o) for o in train_set.object_ids})
    rows = torch.nn.functional.normalize(torch.randn(len(names) + 1, cfg.model.text_dim,
                                                     generator=torch.Generator().manual_seed(0)), dim=1)
    folder = config_path.parent / 'stage_a'
    folder.mkdir()
    ClassTable(tuple(ClassEntry(n, tuple(rows[i].tolist()), 0.1) for i, n in enumerate(names)),
               ClassEntry('object', tuple(rows[-1].tolist()), 0.1), {}).save(folder / TABLE_FILE)
    return folder


@pytest.fixture(scope='module')
def pack_run(config_path: Path, pack: Path, stage_a: Path) -> Path:
    run = config_path.parent / 'run'
    assert main([str(config_path), '--pack', str(pack), '--data-root', str(config_path.parent / 'absent'),
                 '--device', 'cpu', '--class-table', str(stage_a), '--out', str(run)]) == 0
    return run


def read_csv(path: Path) -> list[dict]:
    with open(path, newline='') as handle:
        return list(csv.DictReader(handle))


def test_pack_holds_the_training_draws_and_the_exact_validation_crops(config_path: Path, pack: Path):
    cfg = load_config(config_path)
    with np.load(pack) as packed:
        rotations, objects = packed['train_rotations'], packed['train_objects']
        assert len(rotations) == DRAWS * TRAIN_OBJECTS and sorted(objects) == sorted(list(range(TRAIN_OBJECTS)) * 2)
        assert [str(o) for o in packed['object_ids']] == \
            ReconstructionDataset(cfg.data, 'train', cfg.model.image_size, train=False).object_ids
        # canonical -> viewer: a rotation, or a rotation and the x mirror of a flipped crop
        assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-5)
        assert np.allclose(np.abs(np.linalg.det(rotations)), 1.0, atol=1e-5)
    item = PackedCrops(pack, cfg)[0]
    assert item['image'].shape == (3, 64, 64) and item['points'].shape == (cfg.data.num_gt_points, 3)
    val_set = ReconstructionDataset(cfg.data, 'val', cfg.model.image_size, train=False)
    packed_val = PackedValidation(pack, cfg)
    assert len(packed_val) == len(val_set) >= 1
    for i in range(len(val_set)):   # lossless: validation on the pack is validation on the dataset
        assert torch.equal(packed_val[i]['image'], val_set[i]['image'])
        assert torch.equal(packed_val[i]['points'], val_set[i]['points'])
        assert packed_val[i]['category'] == val_set[i]['category']


def test_train_on_a_pack_needs_no_dataset_and_writes_a_deployable_model(config_path: Path, pack_run: Path):
    loaded = load_model(pack_run / 'model.yaml')
    assert loaded.cfg.train.pack.endswith('pack.npz') and not Path(loaded.cfg.data.root).exists()
    manifest = layout.read_manifest(Path(load_config(config_path).data.root))
    assert loaded.data_manifest_hash == manifest['manifest_hash']
    assert loaded.metrics['device'] == 'cpu' and loaded.metrics['best_epoch'] in range(1, EPOCHS + 1)
    steps = read_csv(pack_run / 'steps.csv')
    assert [int(row['global_step']) for row in steps] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))


def test_learning_rate_follows_schedule_py_step_by_step(pack_run: Path):
    lr = {int(row['global_step']): float(row['lr']) for row in read_csv(pack_run / 'steps.csv')}

    def cosine(epoch: float) -> float:   # counted from epoch 0, not from the end of warm-up
        return MIN_LR + 0.5 * (BASE_LR - MIN_LR) * (1 + math.cos(math.pi * epoch / EPOCHS))

    s = STEPS_PER_EPOCH
    assert lr[1] == pytest.approx(WARMUP_LR)                                          # warm-up start
    assert lr[3] == pytest.approx(WARMUP_LR + 2 / s * (BASE_LR - WARMUP_LR))          # 2 warm-up steps done
    assert lr[s + 1] == pytest.approx(cosine(1.0)) and lr[s + 1] < 0.95 * BASE_LR     # end of warm-up
    assert lr[3 * s + 1] == pytest.approx(MIN_LR + 0.5 * (BASE_LR - MIN_LR))         # middle
    assert lr[EPOCHS * s] == pytest.approx(cosine(EPOCHS - 1 / s))                   # last step


def test_loss_falls_on_a_tiny_overfit(pack_run: Path):
    losses = [float(row['loss']) for row in read_csv(pack_run / 'steps.csv')]
    first, last = np.mean(losses[:STEPS_PER_EPOCH]), np.mean(losses[-STEPS_PER_EPOCH:])
    assert last < 0.8 * first, f'loss {first:.4f} in the first epoch, {last:.4f} in the last'


def test_best_epoch_is_the_lowest_val_cd_l1_and_its_weights_are_the_model(config_path: Path, pack: Path,
                                                                          pack_run: Path):
    epochs = read_csv(pack_run / 'epochs.csv')
    assert [int(row['epoch']) for row in epochs] == list(range(1, EPOCHS + 1))
    best = min(epochs, key=lambda row: float(row['val_cd_l1']))
    loaded = load_model(pack_run / 'model.yaml')
    assert loaded.metrics['best_epoch'] == int(best['epoch'])
    assert load_model(pack_run / 'best.yaml').metrics['best_epoch'] == int(best['epoch'])
    # The saved weights score exactly the best epoch's validation CD-L1 (not the last epoch's).
    cfg = load_config(config_path)
    table = ClassTable.load(pack_run.parent / 'stage_a' / TABLE_FILE, cfg.model.text_dim)
    val = validate(loaded.model, DataLoader(PackedValidation(pack, cfg), batch_size=BATCH), table,
                   Distributed(0, 1, torch.device('cpu')), amp=False)
    assert val['cd_l1'] == pytest.approx(float(best['val_cd_l1']), abs=2e-6)
    assert loaded.metrics['val']['cd_l1'] == pytest.approx(float(best['val_cd_l1']), abs=2e-6)
