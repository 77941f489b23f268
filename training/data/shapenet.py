"""
The paper's ShapeNet packaging (AtlasNet / 3DAttriFlow, docs/method.md §6): index, splits and camera metadata.

::

    <root>/ShapeNetV1PointCloud/<synset>/<model_id>.points.ply.npy     (30000, 3+) float, only [:, :3] is read
    <root>/ShapeNetV1Renderings/<synset>/<model_id>/rendering/NN.png     137×137 RGBA, alpha dropped (as upstream)
    <root>/ShapeNetV1Renderings/<synset>/<model_id>/rendering/rendering_metadata.txt   optional, 3D-R2N2 cameras

Splits per category over the *sorted* model ids: train = first 70 %, val = 70–80 %, test = last 20 %. Training uses
a random view 1–23 with a random 127-px crop, testing view 0 with the centre crop, both resized to the model input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mesc3d_training.data.layout import POINTS_DIR, POINTS_SUFFIX, RENDERINGS_DIR

# The 13 classes of the paper (method.md §6); other synset folders keep their synset id as the name.
SHAPENET_CLASSES = {
    '02691156': 'airplane', '02828884': 'bench', '02933112': 'cabinet', '02958343': 'car', '03001627': 'chair',
    '03211117': 'display', '03636649': 'lamp', '03691459': 'loudspeaker', '04090263': 'rifle', '04256520': 'sofa',
    '04379243': 'table', '04401088': 'telephone', '04530566': 'vessel',
}
IMAGE_SIZE = 137
CROP_SIZE = 127
NUM_VIEWS = 24
TEST_VIEW = 0
METADATA_FILE = 'rendering_metadata.txt'


@dataclass(frozen=True)
class ShapeNetObject:
    synset: str
    category: str
    model_id: str
    points_file: Path
    rendering_dir: Path


def index_shapenet(root: Path) -> dict[str, list[ShapeNetObject]]:
    """Split -> objects, per category over the sorted ids that have both a cloud and renderings."""
    root = Path(root)
    points_root = root / POINTS_DIR
    if not points_root.is_dir():
        raise FileNotFoundError(f'{points_root}: no ShapeNet point clouds (expected the AtlasNet layout)')
    splits: dict[str, list[ShapeNetObject]] = {'train': [], 'val': [], 'test': []}
    for synset_dir in sorted(p for p in points_root.iterdir() if p.is_dir()):
        synset = synset_dir.name
        objects = []
        for points_file in sorted(synset_dir.glob(f'*{POINTS_SUFFIX}')):
            model_id = points_file.name[:-len(POINTS_SUFFIX)]
            rendering_dir = root / RENDERINGS_DIR / synset / model_id / 'rendering'
            if rendering_dir.is_dir():
                objects.append(ShapeNetObject(synset, SHAPENET_CLASSES.get(synset, synset), model_id, points_file,
                                              rendering_dir))
        n = len(objects)
        splits['train'] += objects[:int(n * 0.7)]
        splits['val'] += objects[int(n * 0.7):int(n * 0.8)]
        splits['test'] += objects[int(n * 0.8):]
    return splits


def r2n2_rotation(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """
    (3, 3) ShapeNet object frame -> OpenCV camera frame of a 3D-R2N2 rendering (in-plane rotation is 0 there).

    Convention of Mesh R-CNN's ShapeNet code (facebookresearch/meshrcnn, shapenet/utils/coords.py): rotate the
    world by azimuth about Y and elevation about Z (both negated), permute to the Blender camera axes, undo Blender's
    OBJ import rotation (x +90°), then flip y and z from the OpenGL to the OpenCV camera. Not checked here against
    real renderings (none are available offline); test_data.py checks that the result is a proper rotation.
    """
    az, el = -math.radians(azimuth_deg), -math.radians(elevation_deg)
    ca, sa, ce, se = math.cos(az), math.sin(az), math.cos(el), math.sin(el)
    world_to_object = np.array([[ca * ce, sa * ce, -se], [-sa, ca, 0.0], [ca * se, sa * se, ce]])
    object_to_blender_camera = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    undo_obj_import = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    opengl_to_opencv = np.diag([1.0, -1.0, -1.0])
    return opengl_to_opencv @ object_to_blender_camera @ world_to_object @ undo_obj_import


def read_r2n2_metadata(rendering_dir: Path) -> np.ndarray | None:
    """(24, 5) azimuth, elevation, in-plane rotation, distance ratio, field of view per view; None when absent."""
    path = Path(rendering_dir) / METADATA_FILE
    if not path.is_file():
        return None
    values = np.loadtxt(path, ndmin=2)
    if values.shape[0] < NUM_VIEWS or values.shape[1] < 2:
        raise ValueError(f'{path}: expected {NUM_VIEWS} rows of azimuth elevation ..., got shape {values.shape}')
    return values
