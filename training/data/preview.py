"""
``mesc3d dataset preview``: a contact sheet of a generated dataset to check it by eye.

Each tile is one view: the RGB as stored (background included), the mask outline in green and a subsample of the
ground-truth surface points projected through the stored camera in red, labelled with category and object id. If
the layout, the camera convention or the unit-ball transform were wrong, the red points would leave the outline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from mesc3d_training.data import layout

TILE = 224
LABEL_HEIGHT = 14


def project(K: np.ndarray, points_cam: np.ndarray) -> np.ndarray:
    """(N, 3) optical-frame points -> (N, 2) pixel coordinates (OpenCV pixel centres)."""
    uvw = points_cam @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def preview_tile(root: Path, category: str, object_id: str, view: int, num_points: int = 600) -> np.ndarray:
    """(TILE + LABEL_HEIGHT, TILE, 3) BGR tile of one view."""
    bgr = cv2.imread(str(layout.rgb_path(root, category, object_id, view)), cv2.IMREAD_COLOR)
    mask = cv2.imread(str(layout.mask_path(root, category, object_id, view)), cv2.IMREAD_GRAYSCALE)
    if bgr is None or mask is None:
        raise layout.LayoutError(f'{layout.object_dir(root, category, object_id)}: cannot read view {view}')
    cams = layout.read_cameras(layout.cameras_path(root, category, object_id))
    points = np.load(layout.points_path(root, category, object_id))
    subset = points[np.random.default_rng(0).choice(len(points), min(num_points, len(points)), replace=False)]
    uv = project(cams.K[view], cams.unit_ball_to_camera(subset, view))
    contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(bgr, contours, -1, (0, 255, 0), 1)
    if cams.boxes is not None:  # the detector-like box the crop is cut around, in blue
        x0, y0, x1, y1 = (int(round(v)) for v in cams.boxes[view])
        cv2.rectangle(bgr, (x0, y0), (x1 - 1, y1 - 1), (255, 128, 0), 1)
    for u, v in np.round(uv).astype(int):
        if 0 <= u < bgr.shape[1] and 0 <= v < bgr.shape[0]:
            bgr[v, u] = (0, 0, 255)
    tile = cv2.resize(bgr, (TILE, TILE), interpolation=cv2.INTER_AREA)
    label = np.full((LABEL_HEIGHT, TILE, 3), 255, dtype=np.uint8)
    cv2.putText(label, f'{category}: {object_id}'[:40], (2, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([label, tile])


def write_preview(root: str | Path, out_png: str | Path, columns: int = 8, rows: int = 6) -> Path:
    """Contact sheet of up to columns × rows views; objects spread over categories, two views each."""
    root, out_png = Path(root), Path(out_png)
    manifest = layout.read_manifest(root)
    by_category: dict[str, list[str]] = {}
    for object_id, entry in manifest['objects'].items():
        by_category.setdefault(entry['category'], []).append(object_id)
    # Round-robin over categories, each in a stable hashed order, so the sheet shows every category early.
    queues = [sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
              for _, ids in sorted(by_category.items())]
    picks = []
    while any(queues) and len(picks) * 2 < columns * rows:
        for queue in queues:
            if queue and len(picks) * 2 < columns * rows:
                picks.append(queue.pop(0))
    views = min(2, manifest['views'])
    tiles = [preview_tile(root, manifest['objects'][object_id]['category'], object_id, view)
             for object_id in picks for view in range(views)]
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % columns)
    sheet = np.concatenate([np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)])
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), sheet):
        raise OSError(f'{out_png}: cannot write the preview')
    return out_png
