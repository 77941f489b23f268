"""Loaders of the published external layouts, ShapeNet (with R2N2 metadata) and Pix3D, on miniatures written here."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from mesc3d_ros.config import DataConfig
from mesc3d_ros.geometry import virtual_camera_rotation
from mesc3d_ros.preprocess import square_window
from mesc3d_training.data import layout, shapenet
from mesc3d_training.data.dataset import ReconstructionDataset, open_dataset
from train_fixtures import assert_sample


def _shapenet_miniature(root: Path, with_metadata: bool) -> None:
    rng = np.random.default_rng(0)
    for synset, count in (('03001627', 5), ('04379243', 4)):
        for i in range(count):
            model_id = f'{synset[-3:]}model{i:02d}'
            directions = rng.normal(size=(30000, 3))
            cloud = directions / np.linalg.norm(directions, axis=1, keepdims=True) * [0.3, 0.5, 0.2] + 2.0  # ellipsoid
            path = root / layout.POINTS_DIR / synset / f'{model_id}{layout.POINTS_SUFFIX}'
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, cloud.astype(np.float32))
            rendering = root / layout.RENDERINGS_DIR / synset / model_id / 'rendering'
            rendering.mkdir(parents=True)
            for view in range(shapenet.NUM_VIEWS):
                rgba = np.zeros((137, 137, 4), dtype=np.uint8)
                cv2.circle(rgba, (68, 68), 40 + view, (255, 90, 30, 255), -1)
                cv2.imwrite(str(rendering / f'{view:02d}.png'), rgba)
            if with_metadata:
                metadata = np.column_stack([rng.uniform(0, 360, 24), rng.uniform(20, 35, 24), np.zeros(24),
                                            rng.uniform(0.6, 0.9, 24), np.full(24, 25.0)])
                np.savetxt(rendering / shapenet.METADATA_FILE, metadata)


def test_shapenet_layout(tmp_path: Path) -> None:
    _shapenet_miniature(tmp_path, with_metadata=False)
    cfg = DataConfig(root=str(tmp_path), layout='shapenet', frame='canonical', num_gt_points=2048)
    sizes = {split: len(ReconstructionDataset(cfg, split, 224, train=False)) for split in ('train', 'val', 'test')}
    assert sizes == {'train': 3 + 2, 'val': 1 + 1, 'test': 1 + 1}  # per category: int(.7n), int(.8n) cuts
    test = ReconstructionDataset(cfg, 'test', 224, train=False)
    item = test[0]
    assert_sample(item, 224, 2048, test.categories)
    assert test.categories == ('chair', 'table') and item['view'] == shapenet.TEST_VIEW
    assert item['object_id'] == '627model04'  # the last 20 % of the sorted ids
    assert float(item['points'].norm(dim=1).max()) > 0.95  # unit-ball normalised, not the raw cloud at 2.0
    assert float(item['points'].mean(dim=0).abs().max()) < 0.05
    train = ReconstructionDataset(cfg, 'train', 224, train=True)
    assert all(1 <= train[0]['view'] < shapenet.NUM_VIEWS for _ in range(10))
    with pytest.raises(ValueError, match='no rendering_metadata.txt'):
        ReconstructionDataset(DataConfig(root=str(tmp_path), layout='shapenet'), 'test', 224, train=False)


def test_shapenet_viewer_frame_from_r2n2_metadata(tmp_path: Path) -> None:
    _shapenet_miniature(tmp_path, with_metadata=True)
    dataset = ReconstructionDataset(DataConfig(root=str(tmp_path), layout='shapenet'), 'val', 128, train=False)
    item = dataset[0]
    assert_sample(item, 128, 2048, dataset.categories)
    rotation = item['rotation']
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)
    # At azimuth 0, elevation 0 the camera sits on the object's +x axis with the object's +y up (image up = -y).
    np.testing.assert_allclose(shapenet.r2n2_rotation(0.0, 0.0) @ [1.0, 0, 0], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(shapenet.r2n2_rotation(0.0, 0.0) @ [0, 1.0, 0], [0, -1, 0], atol=1e-12)


def _pix3d_miniature(root: Path) -> dict:
    model = root / 'model' / 'chair' / 'ikea_x' / 'model.obj'
    model.parent.mkdir(parents=True)
    trimesh.creation.box(extents=(0.5, 0.9, 0.4)).export(model)
    entries = []
    for i, (truncated, box) in enumerate(((False, [300, 120, 500, 420]), (True, [0, 0, 100, 100]))):
        image = np.full((480, 640, 3), 40, dtype=np.uint8)
        cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), (200, 180, 20), -1)
        img = root / 'img' / 'chair' / f'{i:04d}.jpg'
        img.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img), image)
        angle = np.radians(30)
        rot = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
        entries.append({'img': f'img/chair/{i:04d}.jpg', 'category': 'chair', 'img_size': [640, 480],
                        'mask': f'mask/chair/{i:04d}.png', 'model': 'model/chair/ikea_x/model.obj',
                        'rot_mat': rot, 'trans_mat': [0.1, 0.0, 2.5], 'focal_length': 35.0, 'bbox': box,
                        'truncated': truncated, 'occluded': False})
    (root / 'pix3d.json').write_text(json.dumps(entries))
    return entries[0]


def test_pix3d_layout(tmp_path: Path) -> None:
    entry = _pix3d_miniature(tmp_path)
    cfg = DataConfig(root=str(tmp_path), layout='pix3d')
    dataset = open_dataset(cfg, 'test', 128, train=False)
    assert len(dataset) == 1  # the truncated photo is left out
    item = dataset[0]
    assert_sample(item, 128, 2048, dataset.categories)
    assert item['object_id'] == 'chair/0000' and np.isnan(item['scale_m'])
    K = item['K'].astype(np.float64)
    assert K[0, 0] == pytest.approx(35.0 / 32 * 640)
    window = square_window(np.asarray(entry['bbox'], dtype=np.float64), cfg.crop_padding)
    expected = (virtual_camera_rotation(K, window.cx, window.cy).T @ np.diag([-1.0, -1, 1])
                @ np.asarray(entry['rot_mat']))
    np.testing.assert_allclose(item['rotation'], expected, atol=1e-6)
    canonical = open_dataset(DataConfig(root=str(tmp_path), layout='pix3d', frame='canonical'), 'test', 128, False)
    np.testing.assert_allclose(item['points'].numpy(), canonical[0]['points'].numpy() @ expected.T, atol=1e-5)
    # The crop is centred on the drawn box (RGB 20, 180, 200): its centre shows the box, its corner the background.
    image = item['image'].numpy()
    assert image[0, 64, 64] < 0.3 and image[2, 64, 64] > 0.6 and image[2, 2, 2] < 0.3
    with pytest.raises(ValueError, match='only the test split'):
        open_dataset(cfg, 'train', 128, train=True)
