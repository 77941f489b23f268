"""
``reconstruct_image``: a photo, a box and a class in; a PLY and a picture out, through the node's own pipeline.

Runs the console script on scikit-image's ``coffee.png`` (a real photograph, CC0) with the shipped model, then
checks the files against what :class:`~mesc3d_ros.pipeline.ReconstructionPipeline` returns in this process for the
same inputs: the command must be the node's pipeline and backend, not a copy of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mesc3d_ros.contract import load_contract
from mesc3d_ros.inference import create_backend
from mesc3d_ros.package_share import resolve_model
from mesc3d_ros.pipeline import PipelineSettings, ReconstructionPipeline
from mesc3d_ros.reconstruct_image import PANEL_HEIGHT_PX, pinhole

CUP_BOX = (170.0, 15.0, 400.0, 300.0)  # xyxy pixels around the cup (and its handle) in coffee.png


@pytest.fixture(scope='module')
def coffee() -> Path:
    data = pytest.importorskip('skimage.data')
    return Path(data.__file__).parent / 'coffee.png'


def read_ply(path: Path) -> np.ndarray:
    """Return the vertex array of a binary PLY written by reconstruct_image (x, y, z float32, object_index uint32)."""
    raw = path.read_bytes()
    header, _, body = raw.partition(b'end_header\n')
    lines = header.decode('ascii').splitlines()
    assert lines[:2] == ['ply', 'format binary_little_endian 1.0'], lines
    count = int(next(line.split()[2] for line in lines if line.startswith('element vertex')))
    properties = [line.split()[1:] for line in lines if line.startswith('property')]
    assert properties == [['float', 'x'], ['float', 'y'], ['float', 'z'], ['uint', 'object_index']]
    return np.frombuffer(body, dtype=[('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('object_index', '<u4')],
                         count=count)


def run_command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'mesc3d_ros.reconstruct_image', *arguments], capture_output=True,
                          text=True, timeout=300)


def in_process(photo: Path, depth: np.ndarray | None, K: np.ndarray) -> np.ndarray:
    """(N, 3) metres: the pipeline's cloud for the cup, computed here with the shipped model."""
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    model = resolve_model('')
    backend = create_backend(model, 'onnxruntime')
    try:
        pipeline = ReconstructionPipeline(backend, load_contract(model), PipelineSettings())
        (obj,), _ = pipeline.process(rgb, np.array([CUP_BOX]), ['mug'], np.ones(1), K, depth)
    finally:
        backend.close()
    return obj.points


def test_photo_with_a_box_and_a_class_gives_the_pipelines_cloud_and_a_picture(coffee: Path, tmp_path: Path):
    result = run_command(str(coffee), '--box', *map(str, CUP_BOX), '--class', 'mug', '--backend', 'onnxruntime',
                         '--out-dir', str(tmp_path))
    assert result.returncode == 0, result.stderr
    vertices = read_ply(tmp_path / 'coffee.ply')
    K = pinhole(600, 400, 60.0)
    expected = in_process(coffee, None, K)
    cloud = np.stack([vertices['x'], vertices['y'], vertices['z']], axis=1)
    np.testing.assert_allclose(cloud, expected, atol=1e-5)
    assert (vertices['object_index'] == 0).all()
    u, v = (K @ cloud.mean(axis=0))[:2] / cloud.mean(axis=0)[2]
    assert CUP_BOX[0] <= u <= CUP_BOX[2] and CUP_BOX[1] <= v <= CUP_BOX[3]
    picture = cv2.imread(str(tmp_path / 'coffee.png'))
    assert picture.shape[0] == PANEL_HEIGHT_PX and picture.shape[1] > 600
    assert 'placed by size_prior' in result.stderr


def test_depth_and_intrinsics_place_the_cup_at_the_measured_distance(coffee: Path, tmp_path: Path):
    depth = np.full((400, 600), 0.45, np.float32)  # (H, W) metres: a flat scene 45 cm away
    np.save(tmp_path / 'depth.npy', depth)
    intrinsics = (520.0, 520.0, 300.0, 200.0)
    result = run_command(str(coffee), '--box', *map(str, CUP_BOX), '--class', 'mug', '--depth',
                         str(tmp_path / 'depth.npy'), '--intrinsics', *map(str, intrinsics), '--out-dir',
                         str(tmp_path / 'out'), '--backend', 'onnxruntime')
    assert result.returncode == 0, result.stderr
    vertices = read_ply(tmp_path / 'out' / 'coffee.ply')
    K = np.array([[520.0, 0.0, 300.0], [0.0, 520.0, 200.0], [0.0, 0.0, 1.0]])
    cloud = np.stack([vertices['x'], vertices['y'], vertices['z']], axis=1)
    np.testing.assert_allclose(cloud, in_process(coffee, depth, K), atol=1e-5)
    assert 'placed by depth' in result.stderr
    assert 0.45 < cloud.mean(axis=0)[2] < 0.7  # the centroid lies behind the measured front surface


def test_mismatched_boxes_and_classes_or_an_unreadable_photo_are_clear_errors(coffee: Path, tmp_path: Path):
    result = run_command(str(coffee), '--box', '1', '2', '3', '4', '--box', '5', '6', '7', '8', '--class', 'mug')
    assert result.returncode == 2 and '2 --box but 1 --class' in result.stderr
    result = run_command(str(tmp_path / 'missing.png'), '--box', '1', '2', '30', '40', '--class', 'mug',
                         '--out-dir', str(tmp_path))
    assert result.returncode == 1 and 'not a readable image file' in result.stderr
