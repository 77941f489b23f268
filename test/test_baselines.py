"""``mesc3d baselines``: the whole comparison end to end on the tiny dataset, and the two baseline models."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mesc3d_ros.config import save_config
from mesc3d_ros.contract import ClassEntry
from mesc3d_training.baselines import (DESCRIPTIONS, ENTRIES, PSGN, RETRIEVAL_VIEWS, build_class_medoid,
                                       build_retrieval, main)
from mesc3d_training.checkpoint import load_model
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.metrics import METRIC_KEYS, chamfer_l1, nearest_squared_distances
from mesc3d_training.prompt_learning import ClassTable
from train_fixtures import UNSEEN, make_tiny_dataset, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp('tiny_data'))


def test_baselines_command_writes_the_comparison_table(data_root: Path, tmp_path: Path):
    config_path = save_config(tiny_config(data_root, epochs=1), tmp_path / 'tiny.yaml')
    out = tmp_path / 'baselines'
    assert main([str(config_path), '--out', str(out), '--set', 'train.prompt_epochs=1']) == 0

    comparison = json.loads((out / 'comparison.json').read_text())
    rows = {(row['entry'], row['split']): row for row in comparison['rows']}
    splits = ('val', 'test', 'zero_shot') + (('unseen',) if UNSEEN else ())
    assert set(rows) == {(entry, split) for entry in ENTRIES for split in splits}
    # Each row is its entry's evaluation report (unseen and zero_shot are scored beside test).
    for (entry, split), row in rows.items():
        report = json.loads((out / entry / f'eval_{"val" if split == "val" else "test"}' / 'metrics.json').read_text())
        assert row['num_samples'] == report[split]['num_samples'] > 0
        assert {key: row[key] for key in METRIC_KEYS} == report[split]['mean']
    # The trained entries are evaluated with the weights of their best validation epoch: the val row reproduces the
    # best val CD-L1 their training logged.
    for entry in ('mesc3d', 'psgn', 'no_esm', 'no_prior'):
        with open(out / entry / 'epochs.csv', newline='') as handle:
            best_val = min(float(row['val_cd_l1']) for row in csv.DictReader(handle))
        assert rows[(entry, 'val')]['cd_l1'] == pytest.approx(best_val, abs=2e-6), entry
    # Retrieval and the class medoid answer with ground-truth training clouds, so they differ from the regressors.
    assert len({rows[(entry, 'test')]['cd_l1'] for entry in ENTRIES}) == len(ENTRIES)
    table = (out / 'comparison.md').read_text()
    for heading in ('## `val`', '## `test`', '## `zero_shot`', '## Quality bar (test split)', '## Training'):
        assert heading in table
    for entry in ENTRIES:
        assert f'| {DESCRIPTIONS[entry]} |' in table
    ratio = rows[('mesc3d', 'test')]['cd_l1'] / rows[('psgn', 'test')]['cd_l1']
    assert f'- CD-L1 ours / PSGN-style = {ratio:.3f}' in table
    assert comparison['training']['retrieval'] == comparison['training']['psgn']
    assert all(comparison['training'][entry]['best_epoch'] == 1 for entry in ('mesc3d', 'psgn', 'no_esm'))

    ours = load_model(out / 'mesc3d' / 'model.yaml')
    no_esm = load_model(out / 'no_esm' / 'model.yaml')
    no_prior = load_model(out / 'no_prior' / 'model.yaml')
    assert ours.cfg.train.prompt_epochs == 1 and ours.cfg.train.epochs == 1
    assert not no_esm.cfg.model.use_selection_maps and not no_prior.cfg.model.use_class_prior
    # One 3DSPL stage for all: the ablations are trained with our class table.
    assert no_esm.classes == ours.classes == no_prior.classes
    assert not (out / 'no_esm' / 'class_table.yaml').exists()


def test_psgn_regresses_points_from_the_image_alone(data_root: Path):
    cfg = tiny_config(data_root)
    torch.manual_seed(0)
    model = PSGN(cfg.model).eval()
    image = torch.rand(2, 3, cfg.model.image_size, cfg.model.image_size)
    points = model(image, torch.randn(2, cfg.model.text_dim))
    assert points.shape == (2, cfg.model.num_points, 3) and points.abs().max() < 1
    assert torch.equal(points, model(image, torch.zeros(2, cfg.model.text_dim)))


def test_retrieval_answers_a_bank_image_with_its_own_cloud(data_root: Path):
    cfg = tiny_config(data_root)
    torch.manual_seed(0)
    retrieval = build_retrieval(PSGN(cfg.model), cfg, batch_size=4)
    bank_cfg = replace(cfg.data, eval_views=RETRIEVAL_VIEWS, num_gt_points=cfg.model.num_points)
    bank = ReconstructionDataset(bank_cfg, 'train', cfg.model.image_size, train=False)
    assert retrieval.bank_points.shape == (len(bank), cfg.model.num_points, 3)
    items = [bank[i] for i in range(len(bank))]
    with torch.no_grad():
        answers = retrieval(torch.stack([item['image'] for item in items]), torch.zeros(len(items), 1))
    for item, answer in zip(items, answers):
        assert torch.equal(answer, item['points'])


def test_class_mean_answers_with_a_training_cloud_of_the_named_class(data_root: Path):
    cfg = tiny_config(data_root)
    bank_cfg = replace(cfg.data, eval_views=1, num_gt_points=cfg.model.num_points)
    bank = ReconstructionDataset(bank_cfg, 'train', cfg.model.image_size, train=False)
    items = [bank[i] for i in range(len(bank))]
    names = sorted({item['category'] for item in items})
    # Distinct, unrelated embeddings per class stand in for the 3DSPL table here.
    rows = torch.eye(len(names) + 1)
    table = ClassTable(classes=tuple(ClassEntry(n, tuple(rows[i].tolist()), 0.1) for i, n in enumerate(names)),
                       generic=ClassEntry('object', tuple(rows[-1].tolist()), 0.1), metrics={})
    model = build_class_medoid(cfg, table)
    with torch.no_grad():
        answers = model(torch.rand(len(items), 3, 8, 8), table.embeddings_for([item['category'] for item in items]))
    for item, answer in zip(items, answers):
        own = torch.stack([other['points'] for other in items if other['category'] == item['category']])
        assert any(torch.equal(answer, cloud) for cloud in own)
        # The medoid: no member of the class has a smaller mean CD-L1 to the class's clouds.

        def mean_cd(cloud):
            return chamfer_l1(nearest_squared_distances(own, cloud.expand_as(own))).mean()
        assert mean_cd(answer) <= min(mean_cd(cloud) for cloud in own) + 1e-6
