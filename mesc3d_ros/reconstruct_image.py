"""
``reconstruct_image PHOTO --box X0 Y0 X1 Y1 --class NAME``: try the model on an image file, without ROS.

Runs exactly what ``reconstruct_node`` runs per frame (the same :class:`~mesc3d_ros.pipeline.ReconstructionPipeline`,
backend and shipped model by default; no torch, no rclpy) on one photo and writes, into ``--out-dir``:

- ``<photo>.ply``  every object's cloud: x, y, z float32 metres in the camera optical frame (x right, y down,
                   z forward) + uint32 ``object_index`` (the order of the ``--box`` options), binary little-endian;
- ``<photo>.png``  the photo with the boxes and the clouds projected into it (colour = distance), beside a side view
                   of the clouds (z forward to the right, y down) with a metre grid.

Without ``--depth`` the distance comes from the class's size prior, so it is only as right as the object is typical
of its class. Without ``--intrinsics`` the camera is assumed to be a pinhole with a ``--fov-deg`` horizontal field of
view centred on the image. ``--depth`` takes a 16-bit PNG (× ``--depth-scale-m``) or a ``.npy`` of metres,
registered to the photo.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from mesc3d_ros.contract import load_contract
from mesc3d_ros.inference import create_backend
from mesc3d_ros.package_share import DEFAULT_MODEL, resolve_model
from mesc3d_ros.pipeline import Issue, ObjectCloud, PipelineSettings, ReconstructionPipeline

LOGGER = logging.getLogger(__name__)

PANEL_HEIGHT_PX = 400
"""Height of each panel of the picture; the photo is scaled to it."""
COLOURS_BGR = ((66, 135, 245), (80, 200, 120), (245, 160, 60), (200, 90, 220), (60, 220, 230))
"""Box colour per object (cycled)."""


def pinhole(width: int, height: int, fov_deg: float) -> np.ndarray:
    """(3, 3) K of a pinhole with horizontal field of view ``fov_deg``, principal point at the image centre."""
    focal = width / 2 / math.tan(math.radians(fov_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def read_depth(path: Path, scale_m: float) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit PNG (× ``scale_m``; 0 = no reading) or a .npy of metres."""
    if path.suffix == '.npy':
        depth = np.load(path)
        return depth.astype(np.float32)
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None or depth.ndim != 2 or depth.dtype != np.uint16:
        raise ValueError(f'{path}: expected a single-channel 16-bit depth PNG (or a .npy of metres)')
    return depth.astype(np.float32) * np.float32(scale_m)


def write_ply(points: np.ndarray, object_index: np.ndarray, path: Path) -> Path:
    """Binary little-endian PLY of (M, 3) float32 metres + (M,) uint32 object index."""
    vertex = np.empty(len(points), dtype=[('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('object_index', '<u4')])
    vertex['x'], vertex['y'], vertex['z'] = points.T
    vertex['object_index'] = object_index
    header = ('ply\nformat binary_little_endian 1.0\ncomment metres, camera optical frame (x right, y down, '
              f'z forward)\nelement vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n'
              'property uint object_index\nend_header\n')
    path.write_bytes(header.encode('ascii') + vertex.tobytes())
    return path


def _distance_colours(z: np.ndarray) -> np.ndarray:
    """(M, 3) uint8 BGR: near = yellow, far = purple (viridis over the clouds' own depth range)."""
    span = max(float(z.max() - z.min()), 1e-6)
    levels = np.round((1.0 - (z - z.min()) / span) * 255).astype(np.uint8)
    return cv2.applyColorMap(levels[:, None], cv2.COLORMAP_VIRIDIS)[:, 0]


def draw_picture(image_rgb: np.ndarray, K: np.ndarray, boxes: np.ndarray, objects: list[ObjectCloud],
                 labels: list[str]) -> np.ndarray:
    """BGR picture: the photo with boxes and projected clouds | side view of the clouds with a metre grid."""
    scale = PANEL_HEIGHT_PX / image_rgb.shape[0]
    photo = cv2.resize(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA)
    side = np.full((PANEL_HEIGHT_PX, PANEL_HEIGHT_PX, 3), 255, np.uint8)
    if objects:
        points = np.concatenate([obj.points for obj in objects])          # (M, 3) metres, optical frame
        colours = _distance_colours(points[:, 2])
        pixels = (points @ K.T)[:, :2] / points[:, 2:3] * scale          # (M, 2) photo panel pixels
        for (u, v), colour in zip(pixels.astype(int), colours):
            cv2.circle(photo, (int(u), int(v)), 1, tuple(int(c) for c in colour), -1)
        _draw_side_view(side, points, colours)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        colour = COLOURS_BGR[i % len(COLOURS_BGR)]
        x0, y0, x1, y1 = (np.asarray(box) * scale).astype(int)
        cv2.rectangle(photo, (x0, y0), (x1, y1), colour, 2)
        cv2.putText(photo, label, (x0 + 3, max(y0 - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return np.hstack([photo, np.full((PANEL_HEIGHT_PX, 4, 3), 255, np.uint8), side])


def _draw_side_view(panel: np.ndarray, points: np.ndarray, colours: np.ndarray) -> None:
    """Orthographic view along -x: z (forward) to the right, y (down) down, equal scale, a metric grid."""
    size = panel.shape[0]
    zy = points[:, [2, 1]]                                                 # (M, 2) metres
    centre = (zy.min(axis=0) + zy.max(axis=0)) / 2
    span = max(float((zy.max(axis=0) - zy.min(axis=0)).max()), 0.05) * 1.3
    to_px = lambda metres: ((metres - centre) / span + 0.5) * size        # noqa: E731 (one-line mapping)
    step = min((0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), key=lambda s: abs(span / 6 - s))  # ~6 grid lines
    for value in np.arange(math.floor((centre[0] - span) / step) * step, centre[0] + span, step):
        x = int(to_px(np.array([value, centre[1]]))[0])
        cv2.line(panel, (x, 0), (x, size), (225, 225, 225), 1)
    for value in np.arange(math.floor((centre[1] - span) / step) * step, centre[1] + span, step):
        y = int(to_px(np.array([centre[0], value]))[1])
        cv2.line(panel, (0, y), (size, y), (225, 225, 225), 1)
    for (x, y), colour in zip(to_px(zy).astype(int), colours):
        cv2.circle(panel, (int(x), int(y)), 1, tuple(int(c) for c in colour), -1)
    cv2.putText(panel, f'side view: z forward ->, y down; grid {step * 100:g} cm', (6, size - 8),
                cv2.FONT_HERSHEY_SIMPLEX, 0.42, (90, 90, 90), 1, cv2.LINE_AA)


def reconstruct(photo: Path, boxes: np.ndarray, classes: list[str], out_dir: Path, model: str = '',
                backend_kind: str = 'auto', depth_path: Path | None = None, depth_scale_m: float = 0.001,
                intrinsics: tuple[float, float, float, float] | None = None,
                fov_deg: float = 60.0) -> tuple[list[ObjectCloud], list[Issue], Path, Path]:
    """Reconstruct ``boxes`` (K, 4) pixels of ``photo``; returns (objects, issues, PLY path, picture path)."""
    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'{photo}: not a readable image file')
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)                              # (H, W, 3) uint8 RGB
    height, width = rgb.shape[:2]
    K = pinhole(width, height, fov_deg) if intrinsics is None else np.array(
        [[intrinsics[0], 0.0, intrinsics[2]], [0.0, intrinsics[1], intrinsics[3]], [0.0, 0.0, 1.0]])
    depth = None if depth_path is None else read_depth(depth_path, depth_scale_m)
    model_path = resolve_model(model)
    backend = create_backend(model_path, backend_kind)
    try:
        pipeline = ReconstructionPipeline(backend, load_contract(model_path), PipelineSettings())
        try:
            objects, issues = pipeline.process(rgb, boxes, classes, np.ones(len(classes)), K, depth)
        finally:
            pipeline.close()
    finally:
        backend.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    if objects:
        points = np.concatenate([obj.points for obj in objects])
        index = np.repeat(np.asarray([obj.detection_index for obj in objects], np.uint32),
                          [len(obj.points) for obj in objects])
    else:
        points, index = np.zeros((0, 3), np.float32), np.zeros(0, np.uint32)
    ply = write_ply(points, index, out_dir / f'{photo.stem}.ply')
    labels = [f'{name} (zero-shot)' if any(o.detection_index == i and o.zero_shot for o in objects) else name
              for i, name in enumerate(classes)]
    picture = out_dir / f'{photo.stem}.png'
    cv2.imwrite(str(picture), draw_picture(rgb, K, boxes, objects, labels))
    return objects, issues, ply, picture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='reconstruct_image', description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.strip().splitlines()[2:]))
    parser.add_argument('photo', type=Path, help='image file (PNG, JPEG, ...)')
    parser.add_argument('--box', type=float, nargs=4, action='append', required=True,
                        metavar=('X0', 'Y0', 'X1', 'Y1'), help='object box in pixels; repeat for more objects')
    parser.add_argument('--class', dest='classes', action='append', required=True,
                        help='model class of each --box, in the same order (unknown names: zero-shot)')
    parser.add_argument('--out-dir', type=Path, default=Path('reconstruct_out'))
    parser.add_argument('--model', default='', help=f'contract JSON or shipped model name (default {DEFAULT_MODEL})')
    parser.add_argument('--backend', default='auto', choices=('auto', 'tensorrt', 'onnxruntime'))
    parser.add_argument('--depth', type=Path, help='depth image registered to the photo (16-bit PNG or .npy m)')
    parser.add_argument('--depth-scale-m', type=float, default=0.001, help='metres per count of a 16-bit PNG')
    parser.add_argument('--intrinsics', type=float, nargs=4, metavar=('FX', 'FY', 'CX', 'CY'),
                        help='pinhole intrinsics in pixels (default: from --fov-deg)')
    parser.add_argument('--fov-deg', type=float, default=60.0, help='horizontal field of view without --intrinsics')
    args = parser.parse_args(argv)
    if len(args.box) != len(args.classes):
        parser.error(f'{len(args.box)} --box but {len(args.classes)} --class: give one class per box')
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        objects, issues, ply, picture = reconstruct(
            args.photo, np.asarray(args.box, dtype=np.float64), args.classes, args.out_dir, args.model,
            args.backend, args.depth, args.depth_scale_m, args.intrinsics, args.fov_deg)
    except (OSError, ValueError) as exc:
        LOGGER.error('%s', exc)
        return 1
    for issue in issues:
        LOGGER.warning('box %d: %s', issue.detection_index, issue.detail)
    for obj in objects:
        centre = obj.placement.centre
        LOGGER.info('box %d %s: %d points, centroid (%.3f, %.3f, %.3f) m, extent %s m, placed by %s',
                    obj.detection_index, obj.model_class, len(obj.points), *centre,
                    np.round(obj.box_size_m, 3).tolist(), obj.placement.mode)
    LOGGER.info('wrote %s and %s', ply, picture)
    return 0 if objects else 1


if __name__ == '__main__':
    sys.exit(main())
