"""
``mesc3d eval``: the report's numbers equal a sample-by-sample recomputation; tables, gallery, determinism.

The checkpoint is a freshly initialised tiny model saved in the deployable format with a random unit-norm class
table: evaluation does not care whether the weights are good, only that it scores them correctly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from mesc3d_ros.contract import ClassEntry
from mesc3d_training.checkpoint import load_model, save_model
from mesc3d_training.data import layout
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.evaluate import main
from mesc3d_training.metrics import METRIC_KEYS, reconstruction_metrics
from mesc3d_training.model import build_model
from mesc3d_training.train_data import data_manifest_hash
from train_fixtures import HELD_OUT, UNSEEN, make_tiny_dataset, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_tiny_dataset(tmp_path_factory.mktemp('tiny_data'))
    cfg = tiny_config(root)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    generator = torch.Generator().manual_seed(1)

    def entry(name: str) -> ClassEntry:
        embedding = F.normalize(torch.randn(cfg.model.text_dim, generator=generator), dim=0)
        return ClassEntry(name, tuple(embedding.tolist()), 0.2)

    stem = tmp_path_factory.mktemp('model') / 'tiny'
    save_model(stem, model, cfg, (entry('mug'), entry('shape'), entry(HELD_OUT)), entry('object'),
               data_manifest_hash(cfg), metrics={})
    return stem.with_suffix('.yaml')


def test_eval_writes_per_category_tables_and_a_gallery(checkpoint: Path, tmp_path: Path):
    shipped = tmp_path / 'shipped' / 'tiny'
    assert main([str(checkpoint), '--split', 'test', '--out', str(tmp_path), '--ship', str(shipped)]) == 0
    report = json.loads((tmp_path / 'metrics.json').read_text())
    loaded = load_model(checkpoint)
    ship = load_model(shipped)
    assert ship.metrics['evaluation']['test'] == {'mean': report['test']['mean'],
                                                  'num_samples': report['test']['num_samples']}
    assert ship.metrics['evaluation']['zero_shot']['mean'] == report['zero_shot']['mean']
    assert ship.classes == loaded.classes and ship.cfg == loaded.cfg
    weight = 'decoder.head.weight'
    assert torch.equal(ship.model.state_dict()[weight], loaded.model.state_dict()[weight].half().float())
    test_set = ReconstructionDataset(loaded.cfg.data, 'test', loaded.cfg.model.image_size, train=False)
    assert report['test']['num_samples'] == len(test_set)
    assert set(report['test']['per_category']) == {test_set[i]['category'] for i in range(len(test_set))}
    assert set(report['zero_shot']['per_category']) == {HELD_OUT}
    assert '0.01' in report['thresholds']['fscore_paper'] and '0.0001' in report['thresholds']['fscore_1pct']
    table = (tmp_path / 'metrics.md').read_text()
    assert '| category | n | CD-L1 ×10² | CD-L2 ×10² | F@0.1 (paper) | F@1% |' in table
    for category, row in report['test']['per_category'].items():
        assert f'| {category} | {row["count"]} | {row["cd_l1"] * 100:.3f} |' in table
    assert '## `zero_shot`' in table
    with Image.open(tmp_path / 'gallery.png') as gallery:
        # One row per shown object: up to 2 per test category plus the zero-shot ones.
        assert gallery.width == 1000 and gallery.height >= 2 * 200


@pytest.mark.parametrize('generic', [False, True], ids=['own_class', 'generic_class'])
def test_eval_numbers_match_a_sample_by_sample_recomputation(checkpoint: Path, tmp_path: Path, generic: bool):
    main([str(checkpoint), '--split', 'zero_shot', '--out', str(tmp_path)] + (['--generic-class'] if generic else []))
    report = json.loads((tmp_path / 'metrics.json').read_text())
    assert 'test' not in report
    loaded = load_model(checkpoint)
    own = [e.embedding for e in loaded.classes if e.name == HELD_OUT]
    embedding = torch.tensor([loaded.generic_class.embedding] if generic else own)   # (1, D)
    dataset = ReconstructionDataset(loaded.cfg.data, 'zero_shot', loaded.cfg.model.image_size, train=False)
    rows = []
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            pred = loaded.model(item['image'][None], embedding)
            rows.append(reconstruction_metrics(pred, item['points'][None]))
    for key in METRIC_KEYS:
        expected = torch.cat([row[key] for row in rows]).mean().item()
        assert report['zero_shot']['mean'][key] == pytest.approx(expected, rel=1e-5, abs=1e-7), key


def test_eval_is_deterministic(checkpoint: Path, tmp_path: Path):
    for out in ('a', 'b'):
        main([str(checkpoint), '--split', 'val', '--out', str(tmp_path / out), '--gallery-per-category', '0'])
    assert (tmp_path / 'a' / 'metrics.json').read_bytes() == (tmp_path / 'b' / 'metrics.json').read_bytes()
    assert not (tmp_path / 'a' / 'gallery.png').exists()


def test_eval_views_scores_every_view_and_reports_the_unseen_collection(checkpoint: Path, tmp_path: Path):
    loaded = load_model(checkpoint)
    test_set = ReconstructionDataset(loaded.cfg.data, 'test', loaded.cfg.model.image_size, train=False)
    objects = len({test_set[i]['object_id'] for i in range(len(test_set))})
    assert main([str(checkpoint), '--views', 'all', '--out', str(tmp_path / 'all'), '--gallery-per-category', '0']) == 0
    report = json.loads((tmp_path / 'all' / 'metrics.json').read_text())
    assert report['test']['num_samples'] == 2 * objects  # the tiny dataset has 2 views per object
    main([str(checkpoint), '--views', '1', '--out', str(tmp_path / 'one'), '--gallery-per-category', '0'])
    assert json.loads((tmp_path / 'one' / 'metrics.json').read_text())['test']['num_samples'] == objects
    if UNSEEN:  # reported beside test and zero_shot
        assert report['unseen']['num_samples'] == 2 * len(UNSEEN)
        assert '## `unseen`' in (tmp_path / 'all' / 'metrics.md').read_text()
    with pytest.raises(SystemExit):
        main([str(checkpoint), '--views', '0'])


def test_eval_on_a_dataset_without_the_held_out_categories(checkpoint: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture):
    """
    A dataset made elsewhere need not have the held-out categories.

    Test is scored, zero_shot skipped, logged; a category name the model does not know (``blob``) is scored with the
    generic embedding, and logged.
    """
    loaded = load_model(checkpoint)
    root = Path(loaded.cfg.data.root)
    manifest = json.loads((root / 'manifest.json').read_text())
    mine = tmp_path / 'mine'
    shutil.copytree(root, mine)
    for object_id, entry in list(manifest['objects'].items()):
        if entry['category'] == HELD_OUT:
            del manifest['objects'][object_id]
            shutil.rmtree(mine / 'ShapeNetV1Renderings' / HELD_OUT / object_id)
            (mine / 'ShapeNetV1PointCloud' / HELD_OUT / f'{object_id}.points.ply.npy').unlink()
            for split in manifest['splits'].values():
                if object_id in split:
                    split.remove(object_id)
    del manifest['categories'][HELD_OUT]
    manifest['held_out_categories'] = []
    manifest['categories']['blob'] = manifest['categories'].pop('shape')
    for entry in manifest['objects'].values():
        entry['category'] = 'blob' if entry['category'] == 'shape' else entry['category']
    for folder in ('ShapeNetV1Renderings', 'ShapeNetV1PointCloud'):
        (mine / folder / 'shape').rename(mine / folder / 'blob')
    manifest['manifest_hash'] = layout.manifest_hash(manifest)
    (mine / 'manifest.json').write_text(json.dumps(manifest))
    assert main([str(checkpoint), '--data-root', str(mine), '--out', str(tmp_path / 'eval')]) == 0
    report = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert report['test']['num_samples'] > 0 and 'zero_shot' not in report
    assert 'none of the held-out categories' in caplog.text
    assert "['blob'] are not in the model's class table" in caplog.text
    assert 'blob' in report['test']['per_category']
