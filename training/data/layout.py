"""
The on-disk layout of a generated dataset: paths, the per-object camera file and the manifest.

The layout is the paper's ShapeNet packaging (AtlasNet / 3DAttriFlow, docs/method.md §6) with category names in place
of synsets, plus our extras (masks, metric depth, cameras)::

    <root>/manifest.json  ATTRIBUTION  report.json
    <root>/ShapeNetV1PointCloud/<category>/<object_id>.points.ply.npy     (16384, 3) float32, unit ball, canonical
    <root>/ShapeNetV1Renderings/<category>/<object_id>/rendering/NN.png      RGB, background kept
                                                      /rendering/NN_mask.png  uint8 {0, 255}
                                                      /rendering/NN_depth.png uint16 z-depth in millimetres, 0 = none
                                                      /cameras.json            K, pose, box, scale, centroid
                                                      /done.json               written last: the object is complete

Frames (docs/data.md §Frames): the *object frame* is the mesh in metres, Y up; the stored cloud is
``p_u = (p_obj - centroid_m) / scale_m``. A view's ``T_cam_obj`` maps object-frame metres into the OpenCV optical frame
(x right, y down, z forward), so ``X_cam = R (scale_m p_u + centroid_m) + t``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POINTS_DIR = 'ShapeNetV1PointCloud'
RENDERINGS_DIR = 'ShapeNetV1Renderings'
MANIFEST_FILE = 'manifest.json'
ATTRIBUTION_FILE = 'ATTRIBUTION'
REPORT_FILE = 'report.json'
POINTS_SUFFIX = '.points.ply.npy'
NUM_SURFACE_POINTS = 16384
DEPTH_UNIT_M = 0.001
"""One count of the uint16 depth PNG: a millimetre, so 65.5 m fit and the quantisation error is ≤ 0.5 mm."""


class LayoutError(ValueError):
    """A dataset file is missing or does not match the layout; the message names the file."""


def points_path(root: Path, category: str, object_id: str) -> Path:
    return Path(root) / POINTS_DIR / category / f'{object_id}{POINTS_SUFFIX}'


def object_dir(root: Path, category: str, object_id: str) -> Path:
    return Path(root) / RENDERINGS_DIR / category / object_id


def rgb_path(root: Path, category: str, object_id: str, view: int) -> Path:
    return object_dir(root, category, object_id) / 'rendering' / f'{view:02d}.png'


def mask_path(root: Path, category: str, object_id: str, view: int) -> Path:
    return object_dir(root, category, object_id) / 'rendering' / f'{view:02d}_mask.png'


def depth_path(root: Path, category: str, object_id: str, view: int) -> Path:
    return object_dir(root, category, object_id) / 'rendering' / f'{view:02d}_depth.png'


def cameras_path(root: Path, category: str, object_id: str) -> Path:
    return object_dir(root, category, object_id) / 'cameras.json'


def done_path(root: Path, category: str, object_id: str) -> Path:
    return object_dir(root, category, object_id) / 'done.json'


@dataclass(frozen=True)
class ObjectCameras:
    """Everything needed to relate an object's unit-ball cloud to its renders."""

    scale_m: float
    """Metres per unit-ball unit: the largest distance of a surface point from the centroid."""
    centroid_m: np.ndarray
    """(3,) metres, object frame: the mean of the surface samples, the unit ball's centre."""
    K: np.ndarray
    """(V, 3, 3) pinhole intrinsics in pixels, integer pixel centres (OpenCV)."""
    T_cam_obj: np.ndarray
    """(V, 4, 4) object frame (metres) -> OpenCV optical frame (metres)."""
    image_size: int
    boxes: np.ndarray | None = None
    """(V, 4) x0, y0, x1, y1 pixel edges: the detector-like box of each view (generator version ≥ 2); None when
    absent (a dataset made elsewhere): loaders then use the mask's box."""
    visible: np.ndarray | None = None
    """(V,) share of the object's mask that no neighbour hides (generator version ≥ 2)."""

    @property
    def num_views(self) -> int:
        return int(self.K.shape[0])

    def unit_ball_to_camera(self, points_unit: np.ndarray, view: int) -> np.ndarray:
        """(N, 3) unit-ball canonical points -> (N, 3) metres in the view's optical frame."""
        pose = self.T_cam_obj[view]
        return (self.scale_m * points_unit + self.centroid_m) @ pose[:3, :3].T + pose[:3, 3]

    def centre_in_camera(self, view: int) -> np.ndarray:
        """(3,) metres: the unit ball's centre in the view's optical frame (what placement must recover)."""
        pose = self.T_cam_obj[view]
        return pose[:3, :3] @ self.centroid_m + pose[:3, 3]

    def to_json(self) -> str:
        return json.dumps({
            'scale_m': float(self.scale_m),
            'centroid_m': [float(v) for v in self.centroid_m],
            'image_size': int(self.image_size),
            'depth_unit_m': DEPTH_UNIT_M,
            'frame': 'T_cam_obj: object frame (metres, Y up) -> OpenCV optical frame (x right, y down, z forward)',
            'views': [{'K': k.tolist(), 'T_cam_obj': pose.tolist(),
                       **({} if self.boxes is None else {'box': [float(v) for v in self.boxes[i]]}),
                       **({} if self.visible is None else {'visible': float(self.visible[i])})}
                      for i, (k, pose) in enumerate(zip(self.K, self.T_cam_obj))],
        }, indent=1)


def read_cameras(path: Path) -> ObjectCameras:
    """Parse a cameras.json; every problem is a :class:`LayoutError` naming the file."""
    try:
        data = json.loads(Path(path).read_text())
        views = data['views']
        cams = ObjectCameras(
            scale_m=float(data['scale_m']),
            centroid_m=np.asarray(data['centroid_m'], dtype=np.float64).reshape(3),
            K=np.asarray([v['K'] for v in views], dtype=np.float64).reshape(len(views), 3, 3),
            T_cam_obj=np.asarray([v['T_cam_obj'] for v in views], dtype=np.float64).reshape(len(views), 4, 4),
            image_size=int(data['image_size']),
            boxes=np.asarray([v['box'] for v in views], dtype=np.float64).reshape(len(views), 4)
            if views and all('box' in v for v in views) else None,
            visible=np.asarray([v['visible'] for v in views], dtype=np.float64)
            if views and all('visible' in v for v in views) else None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LayoutError(f'{path}: unreadable camera file: {exc!r}') from exc
    if not (np.isfinite(cams.scale_m) and cams.scale_m > 0):
        raise LayoutError(f'{path}: scale_m must be a positive number, got {cams.scale_m}')
    return cams


def manifest_hash(manifest: dict) -> str:
    """sha256 of the canonical JSON of a manifest without its own ``manifest_hash`` field."""
    body = {key: value for key, value in manifest.items() if key != 'manifest_hash'}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(',', ':')).encode()).hexdigest()


def read_manifest(root: Path) -> dict:
    """Return the manifest of a generated dataset, with its hash checked."""
    path = Path(root) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LayoutError(f'{path}: cannot read the dataset manifest: {exc}') from exc
    if manifest.get('manifest_hash') != manifest_hash(manifest):
        raise LayoutError(f'{path}: manifest_hash does not match the content (edited or truncated?)')
    return manifest


def write_json_atomic(path: Path, data: dict | str) -> None:
    """Write to a temporary name and rename, so a killed run never leaves half a JSON file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(data if isinstance(data, str) else json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
