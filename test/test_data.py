"""
Dataset generator, layout, the generated data's loader, check and preview (ShapeNet / Pix3D: test_data_layouts.py).

The session fixture renders a real 3-object × 2-view dataset (one mug from each mesh source) with the real
generator: pyrender on EGL, real meshes from the Debian and pybullet packages. Everything else builds on it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from mesc3d_ros.config import DataConfig
from mesc3d_ros.geometry import virtual_camera_rotation
from mesc3d_ros.preprocess import square_window
from mesc3d_training.data import cli, generate, layout
from mesc3d_training.data.categories import (SplitMember, assign_splits, category_for_name, exclusion_reason,
                                             typical_diameters)
from mesc3d_training.data.check import check_dataset
from mesc3d_training.data.dataset import ReconstructionDataset, open_dataset
from mesc3d_training.data.preview import write_preview
from mesc3d_training.data.sources import MeshSource
from train_fixtures import assert_sample

VIEWS = 2
SEED = 7


@pytest.fixture(scope='session')
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('homeobjects_tiny')
    generate.make_dataset(root, seed=SEED, views=VIEWS, object_ids=generate.TINY_OBJECT_IDS, workers=1,
                          progress=False)
    return root


def _objects(root: Path) -> list[tuple[str, str]]:
    manifest = layout.read_manifest(root)
    return [(object_id, entry['category']) for object_id, entry in sorted(manifest['objects'].items())]


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / 'copy'))


# ---- generated data: geometry --------------------------------------------------------------------------------
def test_tiny_dataset_has_the_layout(tiny: Path) -> None:
    manifest = layout.read_manifest(tiny)
    assert sorted(manifest['objects']) == sorted(generate.TINY_OBJECT_IDS)
    assert manifest['views'] == VIEWS and manifest['seed'] == SEED
    for object_id, category in _objects(tiny):
        points = np.load(layout.points_path(tiny, category, object_id))
        assert points.shape == (layout.NUM_SURFACE_POINTS, 3) and points.dtype == np.float32
        assert np.linalg.norm(points, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        assert np.abs(points.mean(axis=0)).max() < 1e-5
        depth = cv2.imread(str(layout.depth_path(tiny, category, object_id, 0)), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16
        # Real metric size: mugs are 8-15 cm across, so the bounding sphere diameter is 10-20 cm.
        assert 0.08 < manifest['objects'][object_id]['diameter_m'] < 0.2
    assert manifest['categories']['mug']['size_m'] > 0
    assert (tiny / layout.ATTRIBUTION_FILE).read_text().count('by ') >= 3
    assert check_dataset(tiny) == []


def test_gt_points_project_inside_the_mask(tiny: Path) -> None:
    for object_id, category in _objects(tiny):
        cams = layout.read_cameras(layout.cameras_path(tiny, category, object_id))
        points = np.load(layout.points_path(tiny, category, object_id)).astype(np.float64)
        for view in range(VIEWS):
            mask = cv2.imread(str(layout.mask_path(tiny, category, object_id, view)), cv2.IMREAD_GRAYSCALE) > 127
            uvw = cams.unit_ball_to_camera(points, view) @ cams.K[view].T
            uv = np.round(uvw[:, :2] / uvw[:, 2:]).astype(int)
            assert (uv >= 0).all() and (uv < mask.shape[0]).all(), f'{object_id} view {view} leaves the image'
            inside = mask[uv[:, 1], uv[:, 0]].mean()
            assert inside >= 0.95, f'{object_id} view {view}: only {inside:.3f} of the points fall in the mask'


def test_depth_backprojects_onto_the_gt_surface(tiny: Path) -> None:
    """Tolerance: one point spacing plus the depth quantisation (0.5 mm), in unit-ball units; median and p95."""
    for object_id, category in _objects(tiny):
        cams = layout.read_cameras(layout.cameras_path(tiny, category, object_id))
        points = np.load(layout.points_path(tiny, category, object_id)).astype(np.float64)
        tree = cKDTree(points)
        spacing = float(np.median(tree.query(points, k=2)[0][:, 1]))
        for view in range(VIEWS):
            depth_m = cv2.imread(str(layout.depth_path(tiny, category, object_id, view)),
                                 cv2.IMREAD_UNCHANGED).astype(np.float64) * layout.DEPTH_UNIT_M
            v, u = np.nonzero(depth_m > 0)
            z = depth_m[v, u]
            K, pose = cams.K[view], cams.T_cam_obj[view]
            camera = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)  # (P, 3) m
            unit = ((camera - pose[:3, 3]) @ pose[:3, :3] - cams.centroid_m) / cams.scale_m
            distance = tree.query(unit)[0]
            tolerance = spacing + 0.5 * layout.DEPTH_UNIT_M / cams.scale_m
            assert np.median(distance) < 1.5 * tolerance, f'{object_id} view {view}'
            assert np.percentile(distance, 95) < 3.0 * tolerance, f'{object_id} view {view}'


def test_viewer_and_canonical_frames_differ_by_the_stored_pose(tiny: Path) -> None:
    viewer = ReconstructionDataset(DataConfig(root=str(tiny), frame='viewer'), 'train', 64, train=False)
    canonical = ReconstructionDataset(DataConfig(root=str(tiny), frame='canonical'), 'train', 64, train=False)
    assert len(viewer) == len(canonical) > 0
    for index in range(len(viewer)):
        a, b = viewer[index], canonical[index]
        assert a['object_id'] == b['object_id'] and a['view'] == b['view']
        cams = layout.read_cameras(layout.cameras_path(tiny, a['category'], a['object_id']))
        window = square_window(a['box'], DataConfig().crop_padding)
        rotation = (virtual_camera_rotation(cams.K[a['view']], window.cx, window.cy).T
                    @ cams.T_cam_obj[a['view'], :3, :3])
        np.testing.assert_allclose(a['points'].numpy(), b['points'].numpy() @ rotation.T, atol=1e-5)
        np.testing.assert_allclose(a['rotation'], rotation, atol=1e-6)
        np.testing.assert_allclose(b['rotation'], np.eye(3))
        # The camera looks at the centroid, so the crop's virtual camera is within a few degrees of the real one.
        tilt = np.degrees(np.arccos(np.clip(np.trace(rotation @ cams.T_cam_obj[a['view'], :3, :3].T) / 2 - 0.5,
                                            -1, 1)))
        assert tilt < 10
        np.testing.assert_allclose(a['center_cam_m'], cams.centre_in_camera(a['view']), rtol=1e-5)
        assert a['center_cam_m'][2] > 0


# ---- generated data: determinism, resume, failures ------------------------------------------------------------
def test_same_seed_same_bytes_with_a_worker_pool(tiny: Path, tmp_path: Path) -> None:
    """Two spawned workers in another order produce the same clouds and cameras; another seed does not."""
    ids = ('random_007', 'pybullet_mug')
    generate.make_dataset(tmp_path / 'pool', seed=SEED, views=VIEWS, object_ids=ids, workers=2, progress=False)
    generate.make_dataset(tmp_path / 'other', seed=SEED + 1, views=VIEWS, object_ids=ids[:1], workers=1,
                          progress=False)
    for object_id in ids:
        category = 'shape' if object_id.startswith('random') else 'mug'
        for path_of in (layout.points_path, layout.cameras_path):
            assert path_of(tmp_path / 'pool', category, object_id).read_bytes() == \
                path_of(tiny, category, object_id).read_bytes()
    assert layout.points_path(tmp_path / 'other', 'shape', ids[0]).read_bytes() != \
        layout.points_path(tiny, 'shape', ids[0]).read_bytes()


def test_resume_skips_finished_objects(tiny: Path, tmp_path: Path) -> None:
    root = _copy(tiny, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob('*.png')}
    generate.make_dataset(root, seed=SEED, views=VIEWS, object_ids=generate.TINY_OBJECT_IDS, workers=1,
                          progress=False)
    report = json.loads((root / layout.REPORT_FILE).read_text())
    assert report['rendered_now'] == 0 and report['reused_finished'] == 3
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    # An object without its done marker (a killed run) is rendered again, and only that one.
    layout.done_path(root, 'shape', 'random_007').unlink()
    generate.make_dataset(root, seed=SEED, views=VIEWS, object_ids=generate.TINY_OBJECT_IDS, workers=1,
                          progress=False)
    report = json.loads((root / layout.REPORT_FILE).read_text())
    assert report['rendered_now'] == 1 and report['reused_finished'] == 2
    assert layout.read_manifest(root)['manifest_hash'] == layout.read_manifest(tiny)['manifest_hash']


def test_broken_mesh_is_skipped_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken_obj = tmp_path / 'broken.obj'
    broken_obj.write_text('v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n')  # one zero-area triangle
    broken = MeshSource(object_id='broken_line', source='pybullet', name='broken', category='toy',
                        mesh_file=str(broken_obj), archive='', rotation=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                        target_extents_m=(), scale=(0.1, 0.1, 0.1), color=(), creator='test', licence='none')
    real_list = generate.list_sources
    monkeypatch.setattr(generate, 'list_sources', lambda kinds, count: (real_list(kinds, count)[0] + [broken], []))
    generate.make_dataset(tmp_path / 'out', views=1, object_ids=('broken_line', 'random_007'), workers=1,
                          progress=False)
    report = json.loads((tmp_path / 'out' / layout.REPORT_FILE).read_text())
    assert [f['object_id'] for f in report['failed']] == ['broken_line']
    assert 'DegenerateMeshError' in report['failed'][0]['error']
    assert list(layout.read_manifest(tmp_path / 'out')['objects']) == ['random_007']


# ---- categories and splits ------------------------------------------------------------------------------------
@pytest.mark.parametrize('name, category', [
    ('Coffee mug', 'mug'), ('Desk lamp', 'lamp'), ('Coffee table', 'table'), ('Apple iPhone', 'electronics'),
    ('Wine bottle', 'bottle'), ('Bedside table', 'cabinet'), ('Teddy bear', 'toy'), ('Screwdriver', 'tool'),
    ('Armchair', 'chair'), ('Corner sofa', 'sofa'), ('Bed', 'bed'), ('Cactus', 'plant'), ('Hamburger', 'food'),
    ('Winchester armchair', 'chair'), ('Xylophone', 'toy'), ('Aquarium', 'other')])
def test_category_rules(name: str, category: str) -> None:
    assert category_for_name(name) == category


def test_exclusions() -> None:
    assert exclusion_reason('Wall switch', 'Miscellaneous', False, (0.085, 0.085, 0.01)) == 'wall_plate'
    assert exclusion_reason('Door', 'Doors and windows', True, (0.9, 2.1, 0.1)) == 'door_or_window'
    assert exclusion_reason('Man', 'Characters', False, (0.5, 1.8, 0.3)) == 'character'
    assert exclusion_reason('Bus', 'Vehicles', False, (2.8, 3.7, 14.0)).startswith('oversized')
    assert exclusion_reason('Round carpet', 'Living room', False, (0.8, 0.0052, 0.8)).startswith('flat')
    assert exclusion_reason('Coffee mug', 'Kitchen', False, (0.085, 0.108, 0.12)) == ''


def test_splits_are_disjoint_and_keep_duplicates_together(tiny: Path) -> None:
    manifest = layout.read_manifest(tiny)
    split_sets = [set(manifest['splits'][s]) for s in ('train', 'val', 'test')]
    assert sum(map(len, split_sets)) == len(set().union(*split_sets)) == len(manifest['objects'])
    members = [SplitMember(f'chair_{i}', 'chair', f'mesh_{i % 7}') for i in range(40)]  # 7 meshes, duplicated
    members += [SplitMember(f'mug_{i}', 'mug', f'cup_{i}') for i in range(10)]
    splits = assign_splits(members)
    for group in range(7):
        assert len({splits[m.object_id] for m in members if m.group == f'mesh_{group}'}) == 1
    mug_counts = [sum(splits[f'mug_{i}'] == s for i in range(10)) for s in ('train', 'val', 'test')]
    assert mug_counts == [7, 1, 2]
    assert assign_splits(reversed(members)) == splits  # stable: independent of input order
    sizes = typical_diameters({'a': 0.1, 'b': 0.3, 'c': 9.0}, {'a': 'mug', 'b': 'mug', 'c': 'mug'},
                              {'a': 'train', 'b': 'train', 'c': 'test'})
    assert sizes == {'mug': pytest.approx(0.2)}


def test_zero_shot_split_holds_only_held_out_categories(tiny: Path) -> None:
    cfg = DataConfig(root=str(tiny), held_out_categories=('mug',), frame='canonical')
    zero_shot = ReconstructionDataset(cfg, 'zero_shot', 32, train=False)
    assert {zero_shot[i]['category'] for i in range(len(zero_shot))} == {'mug'}
    train = ReconstructionDataset(cfg, 'train', 32, train=False)
    assert {train[i]['category'] for i in range(len(train))} == {'shape'}
    with pytest.raises(ValueError, match='not in the dataset'):
        ReconstructionDataset(DataConfig(root=str(tiny), categories=('giraffe',)), 'train', 32, train=False)


# ---- loaders --------------------------------------------------------------------------------------------------
def test_generated_loader_items_and_batches(tiny: Path) -> None:
    cfg = DataConfig(root=str(tiny), num_gt_points=512)
    for train in (True, False):
        dataset = open_dataset(cfg, 'train', 96, train)
        for index in range(len(dataset)):
            assert_sample(dataset[index], 96, 512, dataset.categories)
    assert dataset.category_sizes_m['mug'] > 0
    evaluation = ReconstructionDataset(cfg, 'train', 96, train=False)
    first, again = evaluation[0], evaluation[0]
    assert torch.equal(first['points'], again['points']) and torch.equal(first['image'], again['image'])
    torch.manual_seed(0)
    training = ReconstructionDataset(cfg, 'train', 96, train=True)
    draws = [training[0] for _ in range(4)]
    assert not all(torch.equal(draws[0]['points'], d['points']) for d in draws[1:])
    batch = next(iter(torch.utils.data.DataLoader(training, batch_size=2)))
    assert batch['image'].shape == (2, 3, 96, 96) and batch['points'].shape == (2, 512, 3)
    assert batch['K'].shape == (2, 3, 3) and len(batch['category']) == 2


def test_training_flip_mirrors_image_and_viewer_points(tiny: Path) -> None:
    cfg = DataConfig(root=str(tiny), box_jitter=0.0, color_jitter=0.0)
    dataset = ReconstructionDataset(cfg, 'train', 64, train=True)
    seen = {}
    torch.manual_seed(3)
    for _ in range(40):
        item = dataset[0]
        seen.setdefault((item['view'], item['flipped']), item)
        if len(seen) == 2 * VIEWS:
            break
    view = next(v for v in range(VIEWS) if (v, True) in seen and (v, False) in seen)
    plain, flipped = seen[(view, False)], seen[(view, True)]
    assert torch.equal(flipped['image'], plain['image'].flip(-1))
    np.testing.assert_allclose(flipped['rotation'], np.diag([-1.0, 1, 1]) @ plain['rotation'], atol=1e-6)
    canonical = ReconstructionDataset(DataConfig(root=str(tiny), frame='canonical'), 'train', 64, train=True)
    assert not any(canonical[0]['flipped'] for _ in range(20))


# ---- check, preview, CLI --------------------------------------------------------------------------------------
def test_check_catches_truncated_png_missing_npy_and_nan_cloud(tiny: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    root = _copy(tiny, tmp_path)
    assert cli.main(['check', str(root)]) == 0
    mug, shape, sh3d = 'pybullet_mug', 'random_007', 'sh3d_katorlegaz_coffee_mug'
    truncated = layout.rgb_path(root, 'mug', mug, 1)
    truncated.write_bytes(truncated.read_bytes()[:300])
    missing = layout.points_path(root, 'shape', shape)
    missing.unlink()
    nan_cloud = layout.points_path(root, 'mug', sh3d)
    points = np.load(nan_cloud)
    points[5] = np.nan
    np.save(nan_cloud, points)
    with caplog.at_level(logging.ERROR):
        assert cli.main(['check', str(root)]) == 1
    problems = check_dataset(root)
    assert any(str(truncated) in p and 'truncated' in p for p in problems)
    assert any(str(missing) in p and 'missing' in p for p in problems)
    assert any(str(nan_cloud) in p and 'NaN' in p for p in problems)
    assert str(missing) in caplog.text


def test_check_catches_a_camera_that_disagrees_with_the_masks(tiny: Path, tmp_path: Path) -> None:
    root = _copy(tiny, tmp_path)
    path = layout.cameras_path(root, 'mug', 'pybullet_mug')
    cameras = json.loads(path.read_text())
    cameras['centroid_m'][0] += 0.05  # 5 cm off: the cloud no longer sits on the rendered silhouette
    path.write_text(json.dumps(cameras))
    problems = check_dataset(root)
    assert problems and all(str(path) in p and 'projects onto the mask' in p for p in problems)


def test_check_catches_split_overlap(tiny: Path, tmp_path: Path) -> None:
    root = _copy(tiny, tmp_path)
    manifest = json.loads((root / layout.MANIFEST_FILE).read_text())
    victim = manifest['splits']['train'][0]
    manifest['splits']['test'].append(victim)
    manifest['manifest_hash'] = layout.manifest_hash(manifest)
    (root / layout.MANIFEST_FILE).write_text(json.dumps(manifest))
    assert any(f'object {victim} is in both train and test' in p for p in check_dataset(root))
    (root / layout.MANIFEST_FILE).write_text('{"truncated": ')
    assert 'cannot read the dataset manifest' in check_dataset(root)[0]


def test_alignment_stats_command(tiny: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(['stats', str(tiny), '--view-step', '1', '--depth-every', '1']) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats['views'] == 3 * VIEWS and stats['depth_objects'] == 3
    assert stats['on_mask']['min'] >= 0.95 and stats['on_grown_mask']['min'] >= 0.99
    assert stats['box_iou']['min'] > 0.9 and stats['depth_median_over_tolerance']['max'] < 1.5


def test_preview_contact_sheet(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / 'preview.png'
    assert cli.main(['preview', str(tiny), '--out', str(out), '--columns', '3', '--rows', '2']) == 0
    sheet = cv2.imread(str(out))
    assert sheet.shape[1] == 3 * 224 and sheet.shape[0] == 2 * (224 + 14)
    assert (np.all(sheet == (0, 0, 255), axis=2)).sum() > 100  # projected GT points are drawn in red
    assert write_preview(tiny, tmp_path / 'again.png').is_file()
