"""
Procedural graspables: parametric everyday objects built with trimesh, sized from real ranges.

Bottles, cans, cups, mugs, glasses, bowls, vases, jars, boxes, cartons, books, hammers, spatulas, screwdrivers.

An object is fully determined by its id (``proc_<kind>_<NNNN>``): its shape seed is sha256 of the id, so the same id
always gives the same mesh, whatever the run seed or the order of generation. Vessels are surfaces of revolution of a
random profile (random shoulder, taper and belly) with a real wall thickness where they are open (cups, bowls, vases,
glasses), lids on jars, caps on bottles, a D-shaped handle on mugs (and some cups). Each part has its own colour;
bottles, cans and jars get a label band. Meshes are built Z up in metres and turned Y up (the object frame).

:data:`KINDS` lists (kind, category, share of the procedural objects); the size ranges are written next to each
builder with the real object they come from.
"""

from __future__ import annotations

import colorsys
import hashlib
import math

import numpy as np
import trimesh

# (kind, category, relative share)
KINDS: tuple[tuple[str, str, float], ...] = (
    ('bottle', 'bottle', 3), ('can', 'can', 2), ('cup', 'mug', 2), ('mug', 'mug', 2), ('glass', 'mug', 1.5),
    ('bowl', 'bowl', 2), ('vase', 'vase', 1.5), ('jar', 'vase', 1.5), ('box', 'box', 2), ('carton', 'box', 1.5),
    ('book', 'book', 2), ('hammer', 'tool', 1), ('spatula', 'tool', 1), ('screwdriver', 'tool', 1),
)
CATEGORY_OF = {kind: category for kind, category, _ in KINDS}
CREATOR = 'mesc3d_ros procedural generator (training/data/procedural.py)'
LICENCE = 'CC0-1.0 (generated)'
SECTIONS = 48
"""Facets around a surface of revolution: smooth silhouettes at 224 px, few enough faces to render fast."""
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])


def procedural_ids(count: int) -> list[str]:
    """``count`` object ids spread over :data:`KINDS` by share (largest remainder, so the total is exact)."""
    shares = np.array([share for _, _, share in KINDS], dtype=np.float64)
    exact = shares / shares.sum() * count
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind='stable')[:count - counts.sum()]:
        counts[index] += 1
    return [f'proc_{kind}_{i:04d}' for (kind, _, _), n in zip(KINDS, counts) for i in range(n)]


def kind_of(object_id: str) -> str:
    return object_id.split('_')[1]


def shape_rng(object_id: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(object_id.encode()).digest()[:8], 'little'))


# ---- colours ---------------------------------------------------------------------------------------------------
def _color(rng: np.random.Generator, vivid: float = 0.5) -> np.ndarray:
    """RGBA uint8: household objects are often white, black or grey, otherwise a colour of random saturation."""
    if rng.uniform() < 0.25:
        value = rng.choice([0.08, 0.5, 0.92]) + rng.uniform(-0.06, 0.06)
        rgb = (value, value, value)
    else:
        rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.15, 0.35 + vivid * 0.6), rng.uniform(0.25, 0.95))
    return np.array([*(np.clip(rgb, 0, 1) * 255), 255], dtype=np.uint8)


def _paint(mesh: trimesh.Trimesh, color: np.ndarray) -> trimesh.Trimesh:
    mesh.visual = trimesh.visual.ColorVisuals(mesh, face_colors=np.tile(color, (len(mesh.faces), 1)))
    return mesh


def _label_band(mesh: trimesh.Trimesh, low: float, high: float, color: np.ndarray) -> None:
    """Recolour the faces whose centre height lies in [low, high] (a printed label)."""
    colors = np.array(mesh.visual.face_colors)
    heights = mesh.triangles_center[:, 2]
    colors[(heights > low) & (heights < high)] = color
    mesh.visual = trimesh.visual.ColorVisuals(mesh, face_colors=colors)


# ---- geometry helpers ------------------------------------------------------------------------------------------
def _smooth_profile(rng: np.random.Generator, heights: np.ndarray, radii: np.ndarray, samples: int = 24
                    ) -> np.ndarray:
    """(M, 2) [radius, z] through the control points, smoothed by a cosine interpolation between them."""
    z = np.linspace(heights[0], heights[-1], samples)
    index = np.clip(np.searchsorted(heights, z, side='right') - 1, 0, len(heights) - 2)
    t = (z - heights[index]) / (heights[index + 1] - heights[index])
    blend = (1 - np.cos(np.pi * t)) / 2
    r = radii[index] * (1 - blend) + radii[index + 1] * blend
    return np.stack([r, z], axis=1)


def _solid(outer: np.ndarray) -> trimesh.Trimesh:
    """Close solid of revolution of an outer profile (radius, z) from bottom to top, capped on the axis."""
    line = np.concatenate([[[0.0, outer[0, 1]]], outer, [[0.0, outer[-1, 1]]]])
    return trimesh.creation.revolve(line, sections=SECTIONS)


def _vessel(outer: np.ndarray, wall: float, floor: float) -> trimesh.Trimesh:
    """Open-topped vessel with a wall of thickness ``wall`` and a floor of ``floor`` (metres)."""
    inner = outer[::-1].copy()
    inner[:, 0] = np.maximum(inner[:, 0] - wall, 0.002)
    inner = inner[inner[:, 1] >= outer[0, 1] + floor]
    line = np.concatenate([[[0.0, outer[0, 1]]], outer, inner, [[0.0, inner[-1, 1]]]])
    return trimesh.creation.revolve(line, sections=SECTIONS)


def _cylinder(radius: float, z0: float, z1: float, sections: int = SECTIONS) -> trimesh.Trimesh:
    mesh = trimesh.creation.cylinder(radius=radius, height=z1 - z0, sections=sections)
    mesh.apply_translation([0, 0, (z0 + z1) / 2])
    return mesh


def _tube(path: np.ndarray, radius: float, sides: int = 12) -> trimesh.Trimesh:
    """Return a closed-ended tube of circular section along a polyline (P, 3): mug handles."""
    tangents = np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    helper = np.where(np.abs(tangents[:, [1]]) < 0.9, [[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]])
    normal = np.cross(tangents, helper)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    binormal = np.cross(tangents, normal)
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    rings = path[:, None] + radius * (np.cos(angles)[None, :, None] * normal[:, None]
                                      + np.sin(angles)[None, :, None] * binormal[:, None])  # (P, sides, 3)
    vertices = np.concatenate([rings.reshape(-1, 3), path[[0, -1]]])
    faces = []
    count = len(path)
    for i in range(count - 1):
        for j in range(sides):
            a, b = i * sides + j, i * sides + (j + 1) % sides
            faces += [[a, b, a + sides], [b, b + sides, a + sides]]
    start, end = len(vertices) - 2, len(vertices) - 1
    faces += [[start, (j + 1) % sides, j] for j in range(sides)]
    faces += [[end, (count - 1) * sides + j, (count - 1) * sides + (j + 1) % sides] for j in range(sides)]
    return trimesh.Trimesh(vertices=vertices, faces=np.array(faces), process=False)


def _handle(rng: np.random.Generator, radius: float, z_low: float, z_high: float) -> trimesh.Trimesh:
    """Return a D-shaped handle on the +x side of a vessel of outer ``radius`` between two heights."""
    reach = rng.uniform(0.018, 0.035)  # how far the loop stands out: room for 1-3 fingers
    thickness = rng.uniform(0.004, 0.008)
    t = np.linspace(0, np.pi, 20)
    mid, half = (z_low + z_high) / 2, (z_high - z_low) / 2
    x = radius - 0.002 + reach * np.sin(t) ** rng.uniform(0.6, 1.2)
    path = np.stack([x, np.zeros_like(t), mid + half * np.cos(t)], axis=1)
    return _tube(path, thickness)


def _box(extents: tuple[float, float, float], z0: float = 0.0) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation([0, 0, z0 + extents[2] / 2])
    return mesh


# ---- builders: each returns Z-up coloured parts, metres -------------------------------------------------------
def _bottle(rng):  # water/soda/wine bottles: 15-33 cm tall, 5-9 cm wide, 2-3.5 cm neck
    height, radius = rng.uniform(0.15, 0.33), rng.uniform(0.025, 0.045)
    neck_r = rng.uniform(0.010, min(0.0175, radius * 0.7))
    shoulder, neck = rng.uniform(0.45, 0.75) * height, rng.uniform(0.82, 0.92) * height
    heights = np.array([0.0, 0.01, shoulder * rng.uniform(0.4, 0.9), shoulder, neck, height])
    radii = np.array([radius * 0.9, radius, radius * rng.uniform(0.85, 1.05), radius, neck_r, neck_r])
    body = _paint(_solid(_smooth_profile(rng, heights, radii, 32)), _color(rng))
    _label_band(body, shoulder * rng.uniform(0.2, 0.4), shoulder * rng.uniform(0.6, 0.95), _color(rng, 1.0))
    cap = _paint(_cylinder(neck_r * 1.1, height, height + rng.uniform(0.01, 0.025), 24), _color(rng, 1.0))
    return [body, cap]


def _can(rng):  # drink and food cans: 7-17 cm tall, 5-10 cm wide, rolled rims
    height, radius = rng.uniform(0.07, 0.17), rng.uniform(0.026, 0.05)
    inset = rng.uniform(0.002, 0.006)
    heights = np.array([0.0, 0.006, height - 0.008, height])
    radii = np.array([radius - inset, radius, radius, radius - inset])
    body = _paint(_solid(_smooth_profile(rng, heights, radii, 12)), _color(rng, 0.2))
    _label_band(body, 0.01, height - 0.012, _color(rng, 1.0))
    return [body]


def _open_vessel(rng, height, top_r, bottom_ratio, wall, belly=0.0):
    heights = np.array([0.0, height * 0.5, height])
    radii = np.array([top_r * bottom_ratio, top_r * (bottom_ratio + 1) / 2 * (1 + belly), top_r])
    return _vessel(_smooth_profile(rng, heights, radii, 20), wall, max(wall, 0.004))


def _cup(rng):  # paper/ceramic cups: 7-12 cm tall, 6-9 cm across the rim, 2-5 mm walls
    height, top_r = rng.uniform(0.07, 0.12), rng.uniform(0.03, 0.045)
    parts = [_paint(_open_vessel(rng, height, top_r, rng.uniform(0.65, 0.95), rng.uniform(0.002, 0.005)),
                    _color(rng))]
    if rng.uniform() < 0.3:
        parts.append(_paint(_handle(rng, top_r * 0.92, height * 0.3, height * 0.8), parts[0].visual.face_colors[0]))
    return parts


def _mug(rng):  # coffee mugs: 8-12 cm tall, 7-9 cm wide, 4-7 mm walls, always a handle
    height, top_r = rng.uniform(0.08, 0.12), rng.uniform(0.035, 0.045)
    color = _color(rng)
    body = _paint(_open_vessel(rng, height, top_r, rng.uniform(0.9, 1.0), rng.uniform(0.004, 0.007)), color)
    handle_color = color if rng.uniform() < 0.8 else _color(rng)
    return [body, _paint(_handle(rng, top_r, height * rng.uniform(0.15, 0.3), height * rng.uniform(0.7, 0.85)),
                         handle_color)]


def _glass(rng):  # tumblers 8-15 cm, wine glasses 15-22 cm with a stem; 1.5-3 mm walls
    color = np.array([*rng.uniform(150, 235, 3), 255], dtype=np.uint8)  # glass reads as pale and desaturated
    if rng.uniform() < 0.6:
        height, top_r = rng.uniform(0.08, 0.15), rng.uniform(0.03, 0.04)
        return [_paint(_open_vessel(rng, height, top_r, rng.uniform(0.75, 1.0), rng.uniform(0.0015, 0.003)), color)]
    stem_h, bowl_h, top_r = rng.uniform(0.06, 0.1), rng.uniform(0.07, 0.11), rng.uniform(0.03, 0.045)
    foot = _cylinder(rng.uniform(0.03, 0.04), 0.0, 0.004, 32)
    stem = _cylinder(rng.uniform(0.003, 0.005), 0.004, stem_h, 12)
    cup = _open_vessel(rng, bowl_h, top_r, 0.15, 0.002, belly=rng.uniform(0.2, 0.5))
    cup.apply_translation([0, 0, stem_h])
    return [_paint(part, color) for part in (foot, stem, cup)]


def _bowl(rng):  # cereal to salad bowls: 10-25 cm across, 4-10 cm deep, 3-6 mm walls
    top_r = rng.uniform(0.05, 0.125)
    height = top_r * rng.uniform(0.6, 0.9)
    heights = np.array([0.0, height * 0.15, height * 0.6, height])
    radii = np.array([top_r * rng.uniform(0.3, 0.5), top_r * rng.uniform(0.55, 0.7), top_r * rng.uniform(0.88, 0.97),
                      top_r])
    return [_paint(_vessel(_smooth_profile(rng, heights, radii, 20), rng.uniform(0.003, 0.006), 0.005),
                   _color(rng))]


def _vase(rng):  # flower vases: 15-40 cm tall, 4-10 cm belly radius, narrow or flared mouth
    height, belly = rng.uniform(0.15, 0.4), rng.uniform(0.04, 0.1)
    heights = np.sort(np.concatenate([[0.0, height], rng.uniform(0.1, 0.9, 3) * height]))
    radii = np.array([belly * rng.uniform(0.5, 0.9), *(belly * rng.uniform(0.35, 1.0, 3)),
                      belly * rng.uniform(0.3, 0.9)])
    return [_paint(_vessel(_smooth_profile(rng, heights, radii, 28), rng.uniform(0.003, 0.008), 0.008),
                   _color(rng, 0.8))]


def _jar(rng):  # jam and storage jars: 8-18 cm tall, 6-12 cm wide, a screw lid
    height, radius = rng.uniform(0.08, 0.18), rng.uniform(0.03, 0.06)
    mouth = radius * rng.uniform(0.75, 0.95)
    heights = np.array([0.0, 0.008, height * 0.85, height * 0.93])
    radii = np.array([radius * 0.92, radius, radius, mouth])
    body = _paint(_solid(_smooth_profile(rng, heights, radii, 16)), _color(rng, 0.3))
    _label_band(body, height * 0.25, height * 0.7, _color(rng, 1.0))
    lid = _paint(_cylinder(mouth * 1.06, height * 0.93, height * 0.93 + rng.uniform(0.012, 0.025), 32),
                 _color(rng, 1.0))
    return [body, lid]


def _storage_box(rng):  # shoe, cereal, tea and gift boxes: 5-35 cm sides
    sides = np.sort(rng.uniform(0.05, 0.35, 3))[::-1] * np.array([1.0, 1.0, rng.uniform(0.3, 1.0)])
    extents = tuple(rng.permutation(sides))
    parts = [_paint(_box(extents), _color(rng))]
    if rng.uniform() < 0.3:  # a lid slightly larger than the box, covering its top
        lid_h = extents[2] * rng.uniform(0.15, 0.3)
        parts.append(_paint(_box((extents[0] + 0.004, extents[1] + 0.004, lid_h), extents[2] - lid_h + 0.002),
                            _color(rng)))
    return parts


def _carton(rng):  # milk and juice cartons: 6.5-9.5 cm square, 12-25 cm tall, a gable top
    side, height = rng.uniform(0.065, 0.095), rng.uniform(0.12, 0.25)
    body = _paint(_box((side, side, height)), _color(rng, 0.3))
    _label_band(body, height * 0.2, height * 0.8, _color(rng, 1.0))
    gable = side * rng.uniform(0.25, 0.45)
    roof = trimesh.Trimesh(vertices=[[-side / 2, -side / 2, height], [side / 2, -side / 2, height],
                                     [side / 2, side / 2, height], [-side / 2, side / 2, height],
                                     [-side / 2, 0, height + gable], [side / 2, 0, height + gable]],
                           faces=[[0, 1, 5], [0, 5, 4], [2, 3, 4], [2, 4, 5], [0, 4, 3], [1, 2, 5],
                                  [0, 3, 2], [0, 2, 1]], process=False)
    fin = _box((side, 0.003, 0.012), height + gable - 0.001)
    return [body, _paint(roof, body.visual.face_colors[0]), _paint(fin, body.visual.face_colors[0])]


def _book(rng):  # paperbacks to hardcovers: 13-28 cm × 18-30 cm, 1-6 cm thick
    width, height, thick = rng.uniform(0.13, 0.21), rng.uniform(0.18, 0.30), rng.uniform(0.01, 0.06)
    cover = rng.uniform(0.001, 0.003)
    parts = [_paint(_box((width, thick, cover)), _color(rng)),
             _paint(_box((width, thick, cover), height - cover), _color(rng))]
    parts[1].visual = trimesh.visual.ColorVisuals(parts[1], face_colors=parts[0].visual.face_colors)
    spine = _paint(_box((cover, thick, height)), parts[0].visual.face_colors[0])
    spine.apply_translation([-width / 2, 0, 0])
    pages = _paint(_box((width - 0.004, thick - 0.002, height - 2 * cover), cover), np.array([235, 228, 210, 255],
                                                                                             dtype=np.uint8))
    pages.apply_translation([0.002, 0, 0])
    book = [parts[0], parts[1], spine, pages]
    if rng.uniform() < 0.5:  # lying flat rather than standing
        for part in book:
            part.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))
    return book


def _along_x(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    mesh.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [0, 1, 0]))
    return mesh


def _hammer(rng):  # claw and ball-peen hammers: 25-35 cm handle, 10-14 cm head
    length, head = rng.uniform(0.25, 0.35), rng.uniform(0.10, 0.14)
    handle = _paint(_along_x(_cylinder(rng.uniform(0.012, 0.017), 0.0, length, 20)), _color(rng, 0.6))
    block = rng.uniform(0.022, 0.032)
    top = _paint(_box((block, head, block)), np.array([90, 90, 95, 255], dtype=np.uint8))
    top.apply_translation([length - block / 2, 0, -block / 2])
    return [handle, top]


def _spatula(rng):  # kitchen spatulas: 18-25 cm handle, 6-9 cm blade
    length, blade_w, blade_l = rng.uniform(0.18, 0.25), rng.uniform(0.06, 0.09), rng.uniform(0.07, 0.1)
    handle = _paint(_along_x(_cylinder(rng.uniform(0.007, 0.011), 0.0, length, 16)), _color(rng, 0.8))
    blade = _paint(_box((blade_l, blade_w, rng.uniform(0.002, 0.004))), _color(rng, 0.8))
    blade.apply_translation([length + blade_l / 2 - 0.005, 0, -0.002])
    return [handle, blade]


def _screwdriver(rng):  # screwdrivers: 8-12 cm handle, 5-15 cm shaft of 4-8 mm
    handle_l, shaft_l = rng.uniform(0.08, 0.12), rng.uniform(0.05, 0.15)
    handle_r = rng.uniform(0.012, 0.018)
    heights = np.array([0.0, handle_l * 0.1, handle_l * 0.85, handle_l])
    radii = np.array([handle_r * 0.8, handle_r, handle_r, handle_r * 0.6])
    handle = _paint(_along_x(_solid(_smooth_profile(rng, heights, radii, 10))), _color(rng, 1.0))
    shaft = _paint(_along_x(_cylinder(rng.uniform(0.002, 0.004), handle_l, handle_l + shaft_l, 12)),
                   np.array([170, 170, 175, 255], dtype=np.uint8))
    return [handle, shaft]


BUILDERS = {'bottle': _bottle, 'can': _can, 'cup': _cup, 'mug': _mug, 'glass': _glass, 'bowl': _bowl,
            'vase': _vase, 'jar': _jar, 'box': _storage_box, 'carton': _carton, 'book': _book, 'hammer': _hammer,
            'spatula': _spatula, 'screwdriver': _screwdriver}


def build(object_id: str) -> list[trimesh.Trimesh]:
    """Return the object's coloured parts, metres, Z up turned Y up; the same id always gives the same meshes."""
    kind = kind_of(object_id)
    if kind not in BUILDERS:
        raise ValueError(f'{object_id}: unknown procedural kind {kind!r}; known: {sorted(BUILDERS)}')
    parts = BUILDERS[kind](shape_rng(object_id))
    for part in parts:
        part.apply_transform(Z_UP_TO_Y_UP)
    return parts
