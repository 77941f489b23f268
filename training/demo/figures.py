"""
What a demo run leaves to look at: a PLY and a PNG per object, and the overview picture used in the README.

Per object, one *representative* reconstruction is shown: the output whose CD-L1 is the median of that object's
outputs (not the best one). Plots are orthographic projections in the camera optical frame, metres, centred on the
ground-truth centroid with the same limits for prediction and ground truth, so a misplaced cloud looks misplaced.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from mesc3d_ros.preprocess import crop_and_resize, square_window  # noqa: E402
from mesc3d_training.demo.report import F_THRESHOLDS_M, FrameResult, ObjectResult  # noqa: E402
from mesc3d_training.demo.scenes import SceneSequence  # noqa: E402

OBJECT_COLOURS = plt.get_cmap('tab10').colors
CROP_PX = 224


def representatives(objects: list[ObjectResult]) -> dict[str, ObjectResult]:
    """Map object id -> its output with the median CD-L1 (the lower middle one for an even count)."""
    groups: dict[str, list[ObjectResult]] = defaultdict(list)
    for obj in objects:
        groups[obj.truth.object_id].append(obj)
    return {object_id: sorted(members, key=lambda m: m.cd_l1_m)[(len(members) - 1) // 2]
            for object_id, members in sorted(groups.items())}


def write_ply(points: np.ndarray, colour: tuple[float, float, float], path: Path) -> Path:
    """(N, 3) metres as a coloured binary PLY point cloud."""
    rgba = np.tile(np.round(np.array([*colour, 1.0]) * 255).astype(np.uint8), (len(points), 1))
    path.write_bytes(trimesh.PointCloud(points, colors=rgba).export(file_type='ply'))
    return path


def _orthographic(ax, points: np.ndarray, centre: np.ndarray, half_m: float, view: str, title: str) -> None:
    """Scatter ``points`` (N, 3) seen from the camera (``front``: x right, y down) or from its right (``side``)."""
    rel = points - centre
    horizontal, vertical, depth = (rel[:, 0], -rel[:, 1], rel[:, 2]) if view == 'front' else \
        (rel[:, 2], -rel[:, 1], -rel[:, 0])
    order = np.argsort(-depth)  # far points first, near points drawn on top
    ax.scatter(horizontal[order], vertical[order], c=depth[order], cmap='viridis_r', s=2, linewidths=0,
               vmin=-half_m, vmax=half_m)
    ax.set_xlim(-half_m, half_m)
    ax.set_ylim(-half_m, half_m)
    ax.set_aspect('equal')
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('x [m] (right)' if view == 'front' else 'z [m] (away from camera)', fontsize=7)
    ax.set_ylabel('-y [m] (up in the image)', fontsize=7)
    ax.tick_params(labelsize=6)


def object_figure(obj: ObjectResult, sequence: SceneSequence, crop_padding: float, path: Path) -> Path:
    """Input crop, prediction and ground truth from the camera and from the side, one row."""
    scene = sequence.scenes[obj.scene]
    crop = crop_and_resize(scene.rgb, square_window(obj.truth.box_xyxy, crop_padding), CROP_PX)
    centre = obj.truth.points_cam.mean(axis=0)
    half_m = 0.65 * float(np.ptp(obj.truth.points_cam, axis=0).max()) + obj.centroid_error_m
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.8))
    axes[0].imshow(crop)
    axes[0].set_title(f'node input crop (frame {obj.frame})', fontsize=9)
    axes[0].axis('off')
    _orthographic(axes[1], obj.points, centre, half_m, 'front', 'prediction, camera view')
    _orthographic(axes[2], obj.truth.points_cam, centre, half_m, 'front', 'ground truth, camera view')
    _orthographic(axes[3], obj.points, centre, half_m, 'side', 'prediction, side view')
    _orthographic(axes[4], obj.truth.points_cam, centre, half_m, 'side', 'ground truth, side view')
    scores = ', '.join(f'F@{round(t * 100)}cm {f:.2f}' for t, f in zip(F_THRESHOLDS_M, obj.fscores))
    fig.suptitle(f'{obj.truth.object_id} ({obj.truth.category}, test split): CD-L1 {obj.cd_l1_m * 100:.1f} cm, '
                 f'{scores}, centroid error {obj.centroid_error_m * 100:.1f} cm at {obj.distance_m:.2f} m',
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def overview_figure(frame: FrameResult, sequence: SceneSequence, path: Path) -> Path:
    """Draw the camera image with boxes and clouds projected into it, beside a 3D view of clouds and ground truth."""
    scene = sequence.scenes[frame.scene]
    fig = plt.figure(figsize=(15, 5.6))
    ax_image = fig.add_subplot(1, 2, 1)
    ax_image.imshow(scene.rgb)
    ax_3d = fig.add_subplot(1, 2, 2, projection='3d')
    height, width = scene.depth_mm.shape
    for k, obj in enumerate(frame.objects):
        colour = OBJECT_COLOURS[k % len(OBJECT_COLOURS)]
        x0, y0, x1, y1 = obj.truth.box_xyxy
        ax_image.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, linewidth=1.5))
        ax_image.text(x0, y0 - 4, f'{obj.truth.category}', color=colour, fontsize=8,
                      bbox={'facecolor': 'white', 'alpha': 0.6, 'pad': 1, 'linewidth': 0})
        pixels = obj.points @ sequence.K.T  # (N, 3) homogeneous pixels
        uv = pixels[:, :2] / pixels[:, 2:]
        ax_image.scatter(uv[:, 0], uv[:, 1], s=1, color=colour, alpha=0.5, linewidths=0)
        # 3D axes: x right, z (depth) into the picture, -y up, so the view matches the camera's.
        gt = obj.truth.points_cam[::2]
        ax_3d.scatter(gt[:, 0], gt[:, 2], -gt[:, 1], s=1.5, color='0.35', alpha=0.35, linewidths=0)
        ax_3d.scatter(obj.points[:, 0], obj.points[:, 2], -obj.points[:, 1], s=1.5, color=colour, linewidths=0)
    ax_image.set_xlim(0, width)
    ax_image.set_ylim(height, 0)
    ax_image.axis('off')
    ax_image.set_title(f'camera image, detections and reconstructed clouds projected (frame {frame.frame}, '
                       f'{frame.latency_ms:.0f} ms after capture)', fontsize=9)
    every = np.concatenate([obj.truth.points_cam for obj in frame.objects] + [obj.points for obj in frame.objects])
    low, high = every.min(axis=0), every.max(axis=0)
    half = 0.55 * float((high - low).max())
    middle = (low + high) / 2
    ax_3d.set_xlim(middle[0] - half, middle[0] + half)
    ax_3d.set_ylim(middle[2] - half, middle[2] + half)
    ax_3d.set_zlim(-middle[1] - half, -middle[1] + half)
    ax_3d.set_box_aspect((1, 1, 1))
    ax_3d.view_init(elev=25, azim=-60)
    ax_3d.set_xlabel('x [m]', fontsize=8)
    ax_3d.set_ylabel('z [m] (depth)', fontsize=8)
    ax_3d.set_zlabel('-y [m]', fontsize=8)
    ax_3d.tick_params(labelsize=6)
    ax_3d.set_title('clouds in the camera optical frame (metres); grey: ground truth', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def overview_frame(frames: list[FrameResult]) -> FrameResult:
    """Pick the frame to show: of those with the most objects, the one of median mean CD-L1 (typical, not best)."""
    candidates = [frame for frame in frames if frame.objects]
    most = max(len(frame.objects) for frame in candidates)
    ranked = sorted((frame for frame in candidates if len(frame.objects) == most),
                    key=lambda frame: np.mean([obj.cd_l1_m for obj in frame.objects]))
    return ranked[(len(ranked) - 1) // 2]


def write_object_outputs(objects: list[ObjectResult], sequence: SceneSequence, crop_padding: float,
                         out_dir: Path) -> list[Path]:
    """Per object: ``clouds/<id>.ply`` (prediction), ``clouds/<id>_gt.ply`` and ``objects/<id>.png``."""
    (out_dir / 'clouds').mkdir(parents=True, exist_ok=True)
    (out_dir / 'objects').mkdir(parents=True, exist_ok=True)
    written = []
    for k, (object_id, obj) in enumerate(representatives(objects).items()):
        colour = OBJECT_COLOURS[k % len(OBJECT_COLOURS)]
        written.append(write_ply(obj.points, colour, out_dir / 'clouds' / f'{object_id}.ply'))
        written.append(write_ply(obj.truth.points_cam, (0.6, 0.6, 0.6), out_dir / 'clouds' / f'{object_id}_gt.ply'))
        written.append(object_figure(obj, sequence, crop_padding, out_dir / 'objects' / f'{object_id}.png'))
    return written
