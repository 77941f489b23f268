"""
Mesh sources: the objects that ship in packages and the procedural graspables of ``procedural.py``.

The packaged ones are Sweet Home 3D furniture, pybullet_data objects and random_urdfs, myosuite and LIBERO objects.

:func:`list_sources` enumerates the candidate objects (with the reason each excluded entry is left out) without
touching the meshes; :func:`load_object` loads one of them in the *object frame*: metres, Y up, bounding-box centre
at the origin, at its real size. See docs/offline-data.md §2 for what each source holds and docs/data.md for the
category table.

Real sizes: Sweet Home 3D gives width × height × depth in cm and the application stretches the model's bounding box
to them, so we do the same. pybullet assets carry no size; :data:`PYBULLET_OBJECTS` states the scale we chose (the
URDF's scale where it is plausible, otherwise a typical size of the real thing, written next to it). random_urdfs
use their URDF mesh scale (0.015), which makes 3–15 cm graspable blobs. myosuite and LIBERO objects
(``asset_collections.py``) are metric after their MJCF scale; procedural objects are built in metres.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from mesc3d_training.data import asset_collections, procedural
from mesc3d_training.data.categories import SHAPE_CATEGORY, category_for_name, exclusion_reason

log = logging.getLogger(__name__)

SH3D_FURNITURE_DIR = Path('/usr/share/sweethome3d/furniture')
SOURCE_KINDS = ('sh3d', 'pybullet', 'random', 'myosuite', 'libero', 'morse', 'gym', 'procedural')
DEFAULT_PROCEDURAL_COUNT = 2000
MAX_RANDOM_SHARE = 0.25
"""random_urdfs blobs are capped at this share of the objects that can be trained on (all but the unseen
collection): they are shapes, not the things a robot meets."""
Y_UP_FROM_Z_UP = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)
"""Row-major rotation taking a Z-up asset (pybullet) into our Y-up object frame: (x, y, z) -> (x, z, -y)."""
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
PYBULLET_LICENCE = 'zlib (bullet3, pybullet_data)'

# (object_id, file under pybullet_data, name, category, Z-up?, scale to metres per axis of the *file*; why that size)
PYBULLET_OBJECTS: tuple[tuple[str, str, str, str, bool, tuple[float, float, float]], ...] = (
    ('pybullet_duck', 'duck.obj', 'rubber duck', 'toy', False, (0.05,) * 3),  # URDF scale: an 8 cm bath duck
    ('pybullet_teddy', 'teddy2_VHACD_CHs.obj', 'teddy bear', 'toy', False, (0.3,) * 3),  # 28 cm plush toy
    ('pybullet_bunny', 'bunny.obj', 'bunny figurine', 'toy', False, (0.08,) * 3),  # 16 cm ornament
    ('pybullet_soccerball', 'soccerball.obj', 'soccer ball', 'toy', False, (0.22,) * 3),  # FIFA size 5: 22 cm
    ('pybullet_lego', 'lego/lego.obj', 'lego brick', 'toy', False, (0.1,) * 3),  # URDF scale: a 3 cm brick
    ('pybullet_jenga', 'jenga/jenga.obj', 'jenga block', 'toy', True, (0.075, 0.025, 0.015)),  # real block
    ('pybullet_domino', 'domino/domino.obj', 'domino', 'toy', True, (1.0,) * 3),  # file is metric: 5 cm
    ('pybullet_tray', 'tray/tray_textured2.obj', 'tray', 'bowl', True, (0.3,) * 3),  # 35 cm serving tray
    ('pybullet_torus', 'torus/torus_textured.obj', 'torus ring', 'toy', False, (0.06,) * 3),  # 9 cm ring toy
    ('pybullet_concave_box', 'toys/concave_box.obj', 'open box', 'box', True, (0.05,) * 3),  # 10 cm tray box
    ('pybullet_toy_cube', 'toys/cube.obj', 'toy cube', 'toy', True, (1.0,) * 3),  # file is metric: 9 cm
    ('pybullet_toy_cylinder', 'toys/cylinder.obj', 'toy cylinder', 'toy', True, (1.0,) * 3),
    ('pybullet_toy_prism', 'toys/prism.obj', 'toy prism', 'toy', True, (1.0,) * 3),
    ('pybullet_shape_sorter', 'toys/shape_sorter.obj', 'shape sorter', 'toy', True, (0.5,) * 3),  # 20 cm toy
    ('pybullet_mug', 'objects/mug.obj', 'mug', 'mug', True, (1.0,) * 3),  # file is metric: 12 cm
)


class DegenerateMeshError(ValueError):
    """A mesh that cannot be rendered or sampled (no faces, no area, NaN vertices); the message names the file."""


@dataclass(frozen=True)
class MeshSource:
    """One candidate object; :func:`load_object` turns it into metric meshes."""

    object_id: str
    source: str
    """One of :data:`SOURCE_KINDS` (the collection the object comes from)."""
    name: str
    category: str
    mesh_file: str
    """OBJ path on disk, or inside ``archive``."""
    archive: str
    """The .sh3f zip holding the model folder, '' for plain files."""
    rotation: tuple[float, ...]
    """Row-major 3×3: raw model axes -> Y-up object frame."""
    target_extents_m: tuple[float, ...]
    """Bounding-box size (x, y, z) the rotated model is stretched to (SH3D); () when ``scale`` applies."""
    scale: tuple[float, ...]
    """Per-axis factor from file units to metres, applied before ``rotation``; () when the extents apply."""
    color: tuple[float, ...]
    """RGBA in [0, 1] replacing the materials (single-colour assets), or () to keep them."""
    creator: str
    licence: str
    part_files: tuple[str, ...] = ()
    """Further mesh files merged into the object (multi-part collection objects)."""
    capsules: tuple[tuple[float, float, float, float, float], ...] = ()
    """Upright capsules (radius, half length, x, y, z in file units) that are parts too (MJCF primitive geoms)."""


@dataclass(frozen=True)
class LoadedObject:
    meshes: tuple[trimesh.Trimesh, ...]
    """Parts with their materials; vertices in metres, object frame (Y up, bounding-box centre at 0)."""
    mesh_sha256: str
    """sha256 of the mesh file bytes: identical files are one shape for the splits."""


# ---- listing ---------------------------------------------------------------------------------------------------
def _read_properties(text: str) -> dict[str, str]:
    r"""Parse Java .properties: ``key=value`` lines, ``#`` comments, ``\uXXXX`` escapes."""
    values = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith('#') or '=' not in line:
            continue
        key, value = line.split('=', 1)
        values[key.strip()] = value.strip().encode('latin-1', 'backslashreplace').decode('unicode_escape')
    return values


def _slug(text: str) -> str:
    return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')


def sh3d_sources(furniture_dir: Path = SH3D_FURNITURE_DIR) -> tuple[list[MeshSource], list[dict]]:
    """Sweet Home 3D catalog entries: (kept sources, excluded entries with their reason)."""
    archives = sorted(Path(furniture_dir).glob('*.sh3f'))
    if not archives:
        raise FileNotFoundError(f'no .sh3f catalogs in {furniture_dir}: apt-get install sweethome3d-furniture')
    kept, excluded = [], []
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            props = _read_properties(zf.read('PluginFurnitureCatalog.properties').decode('latin-1'))
        indices = sorted({int(key.split('#')[1]) for key in props if key.startswith('model#')})
        for index in indices:
            field = lambda name, default='': props.get(f'{name}#{index}', default)  # noqa: E731
            model = field('model').lstrip('/')
            object_id = f'sh3d_{_slug(Path(model).parent.as_posix())}'
            extents_m = tuple(float(field(key)) / 100 for key in ('width', 'height', 'depth'))  # cm -> m, x y z
            reason = exclusion_reason(field('name'), field('category'), field('doorOrWindow') == 'true', extents_m)
            if reason:
                excluded.append({'object_id': object_id, 'name': field('name'), 'reason': reason})
                continue
            rotation = tuple(float(v) for v in field('modelRotation').split()) or IDENTITY
            kept.append(MeshSource(
                object_id=object_id, source='sh3d', name=field('name'), category=category_for_name(field('name')),
                mesh_file=model, archive=str(archive), rotation=rotation, target_extents_m=extents_m, scale=(),
                color=(), creator=field('creator', 'unknown'), licence=props.get('license', 'unknown')))
    return kept, excluded


def pybullet_sources() -> list[MeshSource]:
    import pybullet_data  # the data path only; no physics client is started

    root = Path(pybullet_data.getDataPath())
    return [MeshSource(object_id=object_id, source='pybullet', name=name, category=category,
                       mesh_file=str(root / rel), archive='', rotation=Y_UP_FROM_Z_UP if z_up else IDENTITY,
                       target_extents_m=(), scale=scale, color=(), creator='Bullet Physics (pybullet_data)',
                       licence=PYBULLET_LICENCE)
            for object_id, rel, name, category, z_up, scale in PYBULLET_OBJECTS]


def random_urdf_sources() -> list[MeshSource]:
    """pybullet_data/random_urdfs/NNN: OBJ + URDF; the URDF gives the mesh scale and the single colour."""
    import pybullet_data

    sources = []
    for urdf in sorted(Path(pybullet_data.getDataPath(), 'random_urdfs').glob('*/*.urdf')):
        visual = ElementTree.parse(urdf).getroot().find('link/visual')
        mesh = visual.find('geometry/mesh')
        scale = tuple(float(v) for v in mesh.get('scale', '1 1 1').split())
        rgba = visual.find('material/color')
        color = tuple(float(v) for v in rgba.get('rgba').split()) if rgba is not None else (0.6, 0.6, 0.6, 1.0)
        sources.append(MeshSource(
            object_id=f'random_{urdf.stem}', source='random', name=f'random object {urdf.stem}',
            category=SHAPE_CATEGORY, mesh_file=str(urdf.parent / mesh.get('filename')), archive='',
            rotation=Y_UP_FROM_Z_UP, target_extents_m=(), scale=scale, color=color,
            creator='Bullet Physics (pybullet_data random_urdfs)', licence=PYBULLET_LICENCE))
    return sources


def _color_for(object_id: str) -> tuple[float, ...]:
    """Return a muted colour fixed by the id, for untextured meshes (myosuite STLs carry no material)."""
    digest = hashlib.sha256(object_id.encode()).digest()
    return (0.25 + 0.6 * digest[0] / 255, 0.25 + 0.6 * digest[1] / 255, 0.25 + 0.6 * digest[2] / 255, 1.0)


def collection_sources(kind: str) -> list[MeshSource]:
    """
    Return the myosuite, LIBERO, MORSE or gymnasium-robotics kitchen objects.

    Empty, with a warning, when the package or the conversion is missing.
    """
    objects = {'myosuite': asset_collections.myosuite_objects, 'libero': asset_collections.libero_objects,
               'morse': asset_collections.morse_objects, 'gym': asset_collections.gym_kitchen_objects}[kind]()
    return [MeshSource(object_id=o.object_id, source=kind, name=o.name, category=o.category, mesh_file=o.files[0],
                       archive='', rotation=Y_UP_FROM_Z_UP if o.z_up else IDENTITY, target_extents_m=(), scale=o.scale,
                       color=_color_for(o.object_id) if kind in ('myosuite', 'morse', 'gym') else (), creator=o.creator,
                       licence=o.licence, part_files=o.files[1:], capsules=o.capsules)
            for o in objects]


def procedural_sources(count: int) -> list[MeshSource]:
    return [MeshSource(object_id=object_id, source='procedural', name=f'procedural {procedural.kind_of(object_id)}',
                       category=procedural.CATEGORY_OF[procedural.kind_of(object_id)], mesh_file='', archive='',
                       rotation=IDENTITY, target_extents_m=(), scale=(), color=(), creator=procedural.CREATOR,
                       licence=procedural.LICENCE)
            for object_id in procedural.procedural_ids(count)]


def cap_random(sources: list[MeshSource], unseen_source: str, share: float = MAX_RANDOM_SHARE) -> list[MeshSource]:
    """Keep a hash-ranked subset of the random_urdfs so they are at most ``share`` of the trainable objects."""
    others = sum(1 for s in sources if s.source not in ('random', unseen_source))
    # Salted: ranked by the unsalted id hash (--limit's ranking), the kept blobs would all rank early and a --limit
    # subset would hold more of them than the cap.
    blobs = sorted((s for s in sources if s.source == 'random'),
                   key=lambda s: hashlib.sha256(f'cap:{s.object_id}'.encode()).hexdigest())
    keep = min(len(blobs), int(share / (1 - share) * others))
    kept = {s.object_id for s in blobs[:keep]}
    return [s for s in sources if s.source != 'random' or s.object_id in kept]


def list_sources(kinds: Sequence[str] = SOURCE_KINDS, procedural_count: int = DEFAULT_PROCEDURAL_COUNT
                 ) -> tuple[list[MeshSource], list[dict]]:
    """
    All candidate objects of the requested kinds, sorted by id, and the excluded catalog entries.

    myosuite and LIBERO need optional wheels, MORSE a one-off conversion: without them they contribute nothing
    (logged), never an error.
    """
    unknown = sorted(set(kinds) - set(SOURCE_KINDS))
    if unknown:
        raise ValueError(f'unknown mesh source(s) {unknown}; choose from {list(SOURCE_KINDS)}')
    kept, excluded = [], []
    if 'sh3d' in kinds:
        kept, excluded = sh3d_sources()
    if 'pybullet' in kinds:
        kept += pybullet_sources()
    if 'random' in kinds:
        kept += random_urdf_sources()
    for kind in ('myosuite', 'libero', 'morse', 'gym'):
        if kind in kinds:
            kept += collection_sources(kind)
    if 'procedural' in kinds:
        kept += procedural_sources(procedural_count)
    ids = [source.object_id for source in kept]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f'object ids are not unique: {duplicates[:10]}')
    return sorted(kept, key=lambda source: source.object_id), excluded


# ---- loading ---------------------------------------------------------------------------------------------------
def _flat_color_if_unrenderable(mesh: trimesh.Trimesh) -> None:
    """Return a textured material without per-vertex UVs makes pyrender's shader fail: fall back to its main colour."""
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and (
            visual.uv is None or len(visual.uv) != len(mesh.vertices)):
        material = visual.material
        color = material.main_color if material is not None else np.array([160, 160, 160, 255], dtype=np.uint8)
        mesh.visual = trimesh.visual.ColorVisuals(mesh, face_colors=np.tile(color, (len(mesh.faces), 1)))


def mesh_digests(sources: Sequence[MeshSource]) -> dict[str, str]:
    """
    Map object_id -> sha256 of its mesh file bytes (:attr:`LoadedObject.mesh_sha256`), without parsing any mesh.

    The split groups of ``categories.assign_splits``: identical files are one shape. A multi-part object hashes its
    files in order, a procedural one (no file) its id. One zip open per catalog, so the splits of a whole category
    cost seconds, not the minutes loading every mesh would (the demo publisher picks test-split objects this way).
    """
    digests, by_archive = {}, {}
    for source in sources:
        if source.source == 'procedural':
            digests[source.object_id] = hashlib.sha256(source.object_id.encode()).hexdigest()
        elif source.archive:
            by_archive.setdefault(source.archive, []).append(source)
        else:
            hasher = hashlib.sha256()
            for path in (source.mesh_file, *source.part_files):
                hasher.update(Path(path).read_bytes())
            digests[source.object_id] = hasher.hexdigest()
    for archive, members in by_archive.items():
        with zipfile.ZipFile(archive) as zf:
            digests.update({s.object_id: hashlib.sha256(zf.read(s.mesh_file)).hexdigest() for s in members})
    return digests


def _read_parts(source: MeshSource) -> list[trimesh.Trimesh]:
    if source.source == 'procedural':
        return procedural.build(source.object_id)
    if source.archive:
        with zipfile.ZipFile(source.archive) as zf, tempfile.TemporaryDirectory(prefix='sh3d_') as tmp:
            folder = Path(source.mesh_file).parent.as_posix() + '/'
            members = [name for name in zf.namelist() if name.startswith(folder)]
            zf.extractall(tmp, members=members)
            scene = trimesh.load(Path(tmp) / source.mesh_file, force='scene', process=False)
        return [part for part in scene.dump() if isinstance(part, trimesh.Trimesh) and len(part.faces)]
    parts = []
    for path in (Path(source.mesh_file), *map(Path, source.part_files)):  # a multi-part object is their union
        scene = trimesh.load(path, force='scene', process=False)
        parts += [part for part in scene.dump() if isinstance(part, trimesh.Trimesh) and len(part.faces)]
    for radius, half_length, x, y, z in source.capsules:
        capsule = trimesh.creation.capsule(height=2 * half_length, radius=radius, count=[12, 12])
        parts.append(capsule.apply_translation([x, y, z]))
    return parts


def load_object(source: MeshSource) -> LoadedObject:
    """Return the object's meshes in metres, Y up, bounding-box centre at the origin; raises DegenerateMeshError."""
    where = f'{source.archive}:{source.mesh_file}' if source.archive else source.mesh_file
    parts = _read_parts(source)
    if not parts:
        raise DegenerateMeshError(f'{where}: no triangles')
    rotation = np.asarray(source.rotation, dtype=np.float64).reshape(3, 3)
    pre_scale = np.asarray(source.scale or (1.0, 1.0, 1.0), dtype=np.float64)
    for part in parts:
        part.vertices = (np.asarray(part.vertices, dtype=np.float64) * pre_scale) @ rotation.T
    vertices = np.concatenate([part.vertices for part in parts])
    if not np.isfinite(vertices).all():
        raise DegenerateMeshError(f'{where}: non-finite vertices')
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    extents = high - low
    if source.target_extents_m:
        target = np.asarray(source.target_extents_m, dtype=np.float64)
        positive = extents > 1e-9 * extents.max()
        if positive.sum() < 2:
            raise DegenerateMeshError(f'{where}: bounding box {extents} is degenerate')
        stretch = np.where(positive, target / np.where(positive, extents, 1.0), 0.0)
        # A zero-thickness axis (a sheet) keeps the mean factor of the others instead of dividing by zero.
        stretch[~positive] = stretch[positive].mean()
    else:
        stretch = np.ones(3)
    centre = (low + high) / 2
    for part in parts:
        part.vertices = (part.vertices - centre) * stretch
        if source.color:
            rgba = np.clip(np.asarray(source.color) * 255, 0, 255).astype(np.uint8)
            part.visual = trimesh.visual.ColorVisuals(part, face_colors=np.tile(rgba, (len(part.faces), 1)))
        else:
            _flat_color_if_unrenderable(part)
    area = sum(float(part.area) for part in parts)
    if not (np.isfinite(area) and area > 0):
        raise DegenerateMeshError(f'{where}: zero surface area')
    return LoadedObject(meshes=tuple(parts), mesh_sha256=mesh_digests([source])[source.object_id])


def sample_surface(loaded: LoadedObject, count: int, seed: int) -> np.ndarray:
    """(count, 3) float64 area-weighted surface samples in the object frame (metres), reproducible under ``seed``."""
    vertices = np.concatenate([part.vertices for part in loaded.meshes])
    offsets = np.cumsum([0] + [len(part.vertices) for part in loaded.meshes[:-1]])
    faces = np.concatenate([part.faces + offset for part, offset in zip(loaded.meshes, offsets)])
    geometry = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    points, _ = trimesh.sample.sample_surface(geometry, count, seed=np.random.default_rng(seed))
    return np.asarray(points, dtype=np.float64)
