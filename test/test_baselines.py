"""``mesc3d baselines``: the whole comparison end to end on the tiny dataset, and the two baseline models."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mesc3d_ros.config import save_config
from mesc3d_training.baselines import DESCRIPTIONS, ENTRIES, PSGN, RETRIEVAL_VIEWS, build_retrieval, main
from mesc3d_training.checkpoint import load_model
from mesc3d_training.data.dataset import ReconstructionDataset
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
    assert all(math.isfinite(row['cd_l1']) and row['cd_l1'] > 0 for row in rows.values())
    table = (out / 'comparison.md').read_text()
    for heading in ('## `val`', '## `test`', '## `zero_shot`', '## Quality bar (test split)', '## Training'):
        assert heading in table
    for entry in ENTRIES:
        assert f'| {DESCRIPTIONS[entry]} |' in table
        assert (out / entry / 'eval_test' / 'metrics.json').is_file()

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
