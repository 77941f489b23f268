"""
The demo's scenes: test objects on a table, pre-rendered as RGB-D frames, with their ground truth.

One to three objects rest on a tiled plane at random positions and yaws, seen by a pinhole camera from a random
azimuth and elevation, aimed off-centre so that objects land all over the image (which is what makes the node's
virtual-camera rotation matter). Each scene is rendered once (pyrender on EGL, the dataset's renderer settings:
flat shading, no back-face culling, a key and a fill light) with its ground truth: per-pixel object labels, the box
around each object's *visible* mask (what a detector sees), the object-to-camera pose and metric surface points in
the camera optical frame, hidden sides included. :func:`save_sequence` / :func:`load_sequence` keep it in one
``.npz`` so that the streaming process and the scoring process see the same truth.

Frames: the world is Y up (the meshes' frame, docs/data.md) with the table plane at y = 0; camera data are in the
OpenCV optical frame (x right, y down, z forward), metres, pixels with integer centres.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from mesc3d_training.data import render as _egl  # noqa: F401  (sets PYOPENGL_PLATFORM=egl before pyrender loads)
from mesc3d_training.data.scene import mask_box

LOGGER = logging.getLogger(__name__)

# OpenGL camera (x right, y up, looking down -z) -> OpenCV optical camera (x right, y down, z forward).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


# ---- what is rendered ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CameraModel:
    """A pinhole RGB-D camera; the defaults are a VGA camera with a 62° horizontal field of view (RealSense-like)."""

    width: int = 640
    height: int = 480
    focal_px: float = 530.0

    @property
    def K(self) -> np.ndarray:
        """(3, 3) OpenCV intrinsics, principal point at the image centre with integer pixel centres."""
        return np.array([[self.focal_px, 0.0, (self.width - 1) / 2],
                         [0.0, self.focal_px, (self.height - 1) / 2],
                         [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class SceneSettings:
    camera: CameraModel = field(default_factory=CameraModel)
    min_objects: int = 1
    max_objects: int = 3
    """Objects per scene are drawn from min_objects..max_objects (fewer when a layout cannot show them all)."""
    size_ratio: float = 3.0
    """Objects sharing a scene differ in size by at most this factor (no sofa next to a mug)."""
    min_visible_fraction: float = 0.8
    """An object must show at least this share of its unoccluded silhouette, else the layout is redrawn."""
    min_box_px: int = 24
    """Smallest visible box side in pixels: below this a crop carries no shape information."""
    layout_tries: int = 12
    seed: int = 0


@dataclass(frozen=True, eq=False)
class DemoObject:
    """One object to play: its textured parts and surface samples, both in the object frame (metres, Y up)."""

    category: str
    object_id: str
    meshes: tuple[trimesh.Trimesh, ...]
    """Parts with their materials (``mesc3d_training.data.sources.LoadedObject.meshes``)."""
    points: np.ndarray
    """(M, 3) float32 metres: seeded surface samples of ``mesh``, the ground-truth shape."""

    @property
    def diameter_m(self) -> float:
        """Bounding-sphere diameter about the bounding-box centre (the node's size prior measures the same)."""
        low, high = self.points.min(axis=0), self.points.max(axis=0)
        return 2.0 * float(np.linalg.norm(self.points - (low + high) / 2, axis=1).max())


@dataclass(frozen=True, eq=False)
class ObjectTruth:
    """Ground truth of one object in one scene."""

    category: str
    object_id: str
    box_xyxy: np.ndarray
    """(4,) float64 pixels: bounds of the visible mask (``data.scene.mask_box``, the training crops' convention)."""
    T_cam_obj: np.ndarray
    """(4, 4) object frame (metres) -> camera optical frame (metres)."""
    points_cam: np.ndarray
    """(M, 3) float32 metres, camera optical frame: the whole surface, including hidden sides."""
    visible_fraction: float


@dataclass(frozen=True, eq=False)
class RenderedScene:
    rgb: np.ndarray
    """(H, W, 3) uint8."""
    depth_mm: np.ndarray
    """(H, W) uint16 z-depth in millimetres, 0 = no surface (background)."""
    labels: np.ndarray
    """(H, W) uint8: 0 background or table, k = objects[k - 1]."""
    objects: tuple[ObjectTruth, ...]


@dataclass(frozen=True, eq=False)
class SceneSequence:
    """Pre-rendered scenes and how they are played: frame f shows scene (f // frames_per_scene) % len(scenes)."""

    K: np.ndarray
    rate_hz: float
    frames_per_scene: int
    num_frames: int
    scenes: tuple[RenderedScene, ...]

    def scene_index(self, frame: int) -> int:
        return (frame // self.frames_per_scene) % len(self.scenes)


# ---- layout -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Pose:
    obj: DemoObject
    world_from_obj: np.ndarray
    """(4, 4) object frame -> world (Y up, table at y = 0)."""


def _rest_on_table(obj: DemoObject, yaw: float, x: float, z: float) -> np.ndarray:
    """(4, 4) pose that turns ``obj`` by ``yaw`` about the vertical and sets its lowest point on the table at (x, z)."""
    rotation = trimesh.transformations.rotation_matrix(yaw, [0.0, 1.0, 0.0])
    lowest = (obj.points @ rotation[:3, :3].T)[:, 1].min()
    rotation[:3, 3] = (x, -lowest, z)
    return rotation


def _footprint_radius(obj: DemoObject) -> float:
    """Radius of the object's shadow on the table about its vertical axis (any yaw)."""
    return float(np.linalg.norm(obj.points[:, [0, 2]], axis=1).max())


def _choose_objects(rng: np.random.Generator, pool: list[DemoObject], first: DemoObject,
                    settings: SceneSettings) -> list[DemoObject]:
    count = int(rng.integers(settings.min_objects, settings.max_objects + 1))
    similar = [obj for obj in pool if obj is not first
               and 1 / settings.size_ratio <= obj.diameter_m / first.diameter_m <= settings.size_ratio]
    picked = rng.choice(len(similar), size=min(count - 1, len(similar)), replace=False) if similar else []
    return [first] + [similar[i] for i in picked]


def _layout(rng: np.random.Generator, objects: list[DemoObject]) -> list[_Pose]:
    """Random yaws and non-overlapping table positions, packed around the origin."""
    radii = np.array([_footprint_radius(obj) for obj in objects])
    spread = 0.6 * radii.sum() + 0.5 * radii.max()
    for _ in range(100):
        positions = rng.uniform(-spread, spread, size=(len(objects), 2))  # (n, 2) table (x, z), metres
        gaps = np.linalg.norm(positions[:, None] - positions[None], axis=2) - (radii[:, None] + radii[None])
        np.fill_diagonal(gaps, np.inf)
        if (gaps > 0.05 * radii.max()).all():
            break
        spread *= 1.1  # crowded: give them more room
    return [_Pose(obj, _rest_on_table(obj, rng.uniform(0, 2 * np.pi), x, z))
            for obj, (x, z) in zip(objects, positions)]


def _camera_pose(rng: np.random.Generator, poses: list[_Pose], camera: CameraModel) -> np.ndarray:
    """(4, 4) OpenGL camera -> world: random azimuth/elevation, aimed off the scene centre, all objects in view."""
    world_points = np.concatenate([_points_world(pose) for pose in poses])  # (sum M, 3)
    centre = (world_points.min(axis=0) + world_points.max(axis=0)) / 2
    radius = float(np.linalg.norm(world_points - centre, axis=1).max())
    half_fov = np.arctan(min(camera.width, camera.height) / 2 / camera.focal_px)
    distance = radius / np.sin(half_fov * rng.uniform(0.6, 0.9))
    azimuth, elevation = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(20, 55))
    eye = centre + distance * np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
                                        np.cos(elevation) * np.cos(azimuth)])
    forward = (centre - eye) / distance
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    # Aim beside the scene so it lands off the image centre; the visibility check rejects what leaves the frame.
    target = centre + radius * (rng.uniform(-0.4, 0.4) * right + rng.uniform(-0.3, 0.3) * up)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(right, forward), -forward, eye
    return pose


def _points_world(pose: _Pose) -> np.ndarray:
    return pose.obj.points @ pose.world_from_obj[:3, :3].T + pose.world_from_obj[:3, 3]


# ---- rendering ----------------------------------------------------------------------------------------------------

def _table_mesh(rng: np.random.Generator, tile_m: float) -> trimesh.Trimesh:
    """Make a large tiled plane at y = 0 (two close colours, so it reads as a surface with scale cues)."""
    tiles = 80
    base = rng.choice([[150, 115, 80], [185, 185, 180], [70, 90, 120], [120, 135, 100]])
    colours = [np.clip(base + delta, 0, 255) for delta in (0, 18)]
    half = tiles * tile_m / 2
    grid = np.linspace(-half, half, tiles + 1)
    gx, gz = np.meshgrid(grid, grid)
    vertices = np.stack([gx.ravel(), np.zeros(gx.size), gz.ravel()], axis=1)  # ((t+1)², 3) metres
    index = np.arange((tiles + 1) ** 2).reshape(tiles + 1, tiles + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, 1:].ravel(), index[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([a, d, c], 1)])  # counter-clockwise seen from +y
    checker = ((np.arange(tiles)[:, None] + np.arange(tiles)[None]) % 2).ravel()
    face_colours = np.array(colours, dtype=np.uint8)[np.concatenate([checker, checker])]
    return trimesh.Trimesh(vertices, faces, face_colors=np.c_[face_colours, np.full(len(faces), 255)], process=False)


def _background(rng: np.random.Generator, camera: CameraModel) -> np.ndarray:
    """(H, W, 3) uint8 vertical gradient (a wall or the sky), composited where no surface was hit."""
    top, bottom = rng.uniform(120, 235, size=3), rng.uniform(60, 200, size=3)
    ramp = np.linspace(0.0, 1.0, camera.height)[:, None, None]
    return np.broadcast_to((top * (1 - ramp) + bottom * ramp).astype(np.uint8), (camera.height, camera.width, 3))


class SceneRenderer:
    """Renders layouts of :class:`DemoObject` with one off-screen EGL context (create once, :meth:`close` it)."""

    def __init__(self, camera: CameraModel) -> None:
        import pyrender  # after mesc3d_training.data.render set PYOPENGL_PLATFORM=egl (headless)

        self._pyrender = pyrender
        self.camera = camera
        self._renderer = pyrender.OffscreenRenderer(camera.width, camera.height)
        self._meshes: dict[int, list] = {}  # id(DemoObject) -> its pyrender meshes, built once per object

    def close(self) -> None:
        self._renderer.delete()

    def _mesh(self, obj: DemoObject):
        if id(obj) not in self._meshes:
            # Flat shading as the dataset renders (training/data/render.py): per-face colours cannot be smoothed.
            self._meshes[id(obj)] = [self._pyrender.Mesh.from_trimesh(part, smooth=False) for part in obj.meshes]
        return self._meshes[id(obj)]

    def render(self, rng: np.random.Generator, poses: list[_Pose], cam_pose_gl: np.ndarray):
        """(rgb (H, W, 3) uint8, depth (H, W) float32 m, labels (H, W) uint8, solo pixel counts (n,)) of one layout."""
        pyrender, camera = self._pyrender, self.camera
        K = camera.K
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=np.full(3, rng.uniform(0.2, 0.4)))
        radius = max(pose.obj.diameter_m for pose in poses)
        table = scene.add(pyrender.Mesh.from_trimesh(_table_mesh(rng, tile_m=radius / 2), smooth=False))
        # Per object, the scene nodes of its parts (segmentation and visibility work on mesh nodes).
        parts = [[scene.add(mesh, pose=pose.world_from_obj) for mesh in self._mesh(pose.obj)] for pose in poses]
        # pyrender's principal point is in window coordinates (pixel edges): OpenCV's + 0.5.
        scene.add(pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                                            znear=0.02, zfar=100.0), pose=cam_pose_gl)
        for intensity in (rng.uniform(2.0, 4.5), rng.uniform(0.3, 1.5)):  # key and fill light, as the dataset
            tilt = trimesh.transformations.euler_matrix(*rng.uniform(-0.6, 0.6, size=3))
            scene.add(pyrender.DirectionalLight(intensity=intensity), pose=cam_pose_gl @ tilt)
        # Catalog models mix face windings and single-sided sheets: no back-face culling (as training/data/render.py).
        flags = pyrender.RenderFlags.SKIP_CULL_FACES
        rgb, depth = self._renderer.render(scene, flags=flags)
        seg, _ = self._renderer.render(scene, flags=flags | pyrender.RenderFlags.SEG, seg_node_map={
            node: (k + 1, 0, 0) for k, nodes in enumerate(parts) for node in nodes})
        labels = seg[:, :, 0].astype(np.uint8)
        # Each object alone, for how much of it the others hide.
        solo = []
        meshes = [table.mesh] + [node.mesh for nodes in parts for node in nodes]
        for k in range(len(poses)):
            for mesh in meshes:
                mesh.is_visible = False
            for node in parts[k]:
                node.mesh.is_visible = True
            solo.append(int((self._renderer.render(scene, flags=flags | pyrender.RenderFlags.DEPTH_ONLY) > 0).sum()))
        for mesh in meshes:
            mesh.is_visible = True
        rgb = np.where((depth > 0)[:, :, None], rgb, _background(rng, camera))
        return rgb, depth, labels, np.array(solo)


def _render_scene(renderer: SceneRenderer, rng: np.random.Generator, objects: list[DemoObject],
                  settings: SceneSettings) -> RenderedScene | None:
    """Lay out and render ``objects``; None when no layout within ``layout_tries`` shows all of them well."""
    camera = settings.camera
    for _ in range(settings.layout_tries):
        poses = _layout(rng, objects)
        cam_pose_gl = _camera_pose(rng, poses, camera)
        rgb, depth, labels, solo = renderer.render(rng, poses, cam_pose_gl)
        cam_from_world = GL_TO_CV @ np.linalg.inv(cam_pose_gl)
        truths = []
        for k, pose in enumerate(poses):
            mask = labels == k + 1
            if not mask.any() or mask.sum() < settings.min_visible_fraction * solo[k]:
                break
            box = mask_box(mask)
            touches_border = box[0] == 0 or box[1] == 0 or box[2] == camera.width or box[3] == camera.height
            if touches_border or min(box[2] - box[0], box[3] - box[1]) < settings.min_box_px:
                break
            T_cam_obj = cam_from_world @ pose.world_from_obj
            points_cam = pose.obj.points @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]  # (M, 3) metres, optical frame
            truths.append(ObjectTruth(pose.obj.category, pose.obj.object_id, box, T_cam_obj,
                                      points_cam.astype(np.float32), float(mask.sum() / solo[k])))
        else:
            depth_mm = np.clip(np.round(depth * 1000.0), 0, np.iinfo(np.uint16).max).astype(np.uint16)
            return RenderedScene(rgb=np.ascontiguousarray(rgb), depth_mm=depth_mm, labels=labels,
                                 objects=tuple(truths))
    return None


def render_sequence(pool: list[DemoObject], settings: SceneSettings, num_scenes: int, rate_hz: float,
                    frames_per_scene: int, num_frames: int) -> SceneSequence:
    """
    Pre-render ``num_scenes`` scenes; every object of ``pool`` leads a scene in turn (so all of them are played).

    Deterministic under ``settings.seed``: scene s draws from its own generator seeded with (seed, s).
    """
    if not pool:
        raise ValueError('no objects to play: the pool is empty')
    order = np.random.default_rng(settings.seed).permutation(len(pool))
    renderer = SceneRenderer(settings.camera)
    scenes = []
    try:
        for index in range(num_scenes):
            rng = np.random.default_rng([settings.seed, index])
            objects = _choose_objects(rng, pool, pool[order[index % len(pool)]], settings)
            scene = None
            while scene is None and objects:
                scene = _render_scene(renderer, rng, objects, settings)
                objects = objects[:-1]  # too crowded to show them all: try with one object fewer
            if scene is None:
                raise RuntimeError(f'object {pool[order[index % len(pool)]].object_id!r} cannot be shown fully in '
                                   f'{settings.layout_tries} layouts (camera {settings.camera})')
            scenes.append(scene)
            LOGGER.debug('scene %d: %s', index, [truth.object_id for truth in scene.objects])
    finally:
        renderer.close()
    return SceneSequence(K=settings.camera.K, rate_hz=rate_hz, frames_per_scene=frames_per_scene,
                         num_frames=num_frames, scenes=tuple(scenes))


# ---- ground-truth file --------------------------------------------------------------------------------------------

def save_sequence(sequence: SceneSequence, path: Path) -> Path:
    """One ``.npz`` (no pickles): frames stacked per scene, objects flattened with their scene index."""
    objects = [(index, truth) for index, scene in enumerate(sequence.scenes) for truth in scene.objects]
    meta = {'rate_hz': sequence.rate_hz, 'frames_per_scene': sequence.frames_per_scene,
            'num_frames': sequence.num_frames,
            'objects': [{'scene': index, 'category': truth.category, 'object_id': truth.object_id,
                         'visible_fraction': truth.visible_fraction, 'num_points': len(truth.points_cam)}
                        for index, truth in objects]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.stem}.{os.getpid()}.tmp.npz')
    np.savez(tmp, meta=np.array(json.dumps(meta)), K=sequence.K,
             rgb=np.stack([scene.rgb for scene in sequence.scenes]),  # (S, H, W, 3) uint8
             depth_mm=np.stack([scene.depth_mm for scene in sequence.scenes]),  # (S, H, W) uint16
             labels=np.stack([scene.labels for scene in sequence.scenes]),  # (S, H, W) uint8
             boxes=np.array([truth.box_xyxy for _, truth in objects]).reshape(-1, 4),
             poses=np.array([truth.T_cam_obj for _, truth in objects]).reshape(-1, 4, 4),
             points=np.concatenate([truth.points_cam for _, truth in objects]))  # (sum M, 3) metres, optical
    tmp.replace(path)
    return path


def load_sequence(path: Path) -> SceneSequence:
    """Read a file written by :func:`save_sequence`; ValueError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data['meta']))
            arrays = {key: data[key] for key in ('K', 'rgb', 'depth_mm', 'labels', 'boxes', 'poses', 'points')}
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f'{path}: not a scene sequence written by save_sequence: {exc}') from exc
    ends = np.cumsum([entry['num_points'] for entry in meta['objects']])
    truths: list[list[ObjectTruth]] = [[] for _ in range(len(arrays['rgb']))]
    for k, entry in enumerate(meta['objects']):
        truths[entry['scene']].append(ObjectTruth(
            entry['category'], entry['object_id'], arrays['boxes'][k], arrays['poses'][k],
            arrays['points'][ends[k] - entry['num_points']:ends[k]], entry['visible_fraction']))
    scenes = tuple(RenderedScene(rgb, depth, labels, tuple(objs)) for rgb, depth, labels, objs in
                   zip(arrays['rgb'], arrays['depth_mm'], arrays['labels'], truths))
    return SceneSequence(K=arrays['K'], rate_hz=meta['rate_hz'], frames_per_scene=meta['frames_per_scene'],
                         num_frames=meta['num_frames'], scenes=scenes)
