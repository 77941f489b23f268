"""
Coarse object categories, exclusions and the object-level splits of the generated dataset.

Sweet Home 3D catalog entries carry a free-text ``name`` ("Coffee mug", "Desk lamp") and one of 12 room categories;
neither is a class a robot can use. :data:`NAME_RULES` maps names to coarse categories by ordered regular expressions
(first match wins, so "Desk lamp" is a lamp before "desk" makes it a table). Names that match no rule become
``other``. pybullet objects get their category in ``sources.py``; the 1000 procedural ``random_urdfs`` are ``shape``.
docs/data.md §Categories shows the resulting table.

Splits are by object, never by view: within each category, groups of identical meshes (same file sha256) are ranked
by a stable hash and cut 70/10/20, so a category with ≥ 3 distinct meshes always has test objects and duplicates
never straddle two splits. Objects of the unseen collection (:data:`DEFAULT_UNSEEN_SOURCE`) all go to
:data:`UNSEEN_SPLIT` instead. :data:`HELD_OUT_CATEGORIES` are the zero-shot categories: a zero-shot run lists them in
``DataConfig.held_out_categories``, which removes them from train/val/test and makes them the ``zero_shot`` split.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ('train', 'val', 'test')
ZERO_SHOT_SPLIT = 'zero_shot'
UNSEEN_SPLIT = 'unseen'
"""A whole real collection (every object of one source) never in train or val: novel-collection generalisation."""
DEFAULT_UNSEEN_SOURCE = 'myosuite'
MANIFEST_SPLITS = SPLITS + (UNSEEN_SPLIT,)
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
HELD_OUT_CATEGORIES = ('food', 'tool')
"""Graspable categories with ≥ 10 objects and shapes unlike the rest (docs/offline-data.md §6)."""
SHAPE_CATEGORY = 'shape'
OTHER_CATEGORY = 'other'
MAX_EXTENT_M = 2.5
"""Larger objects (trees, vehicles, pools, bus stops) are outside what a manipulator or a room camera frames."""
FLAT_RATIO = 0.02
FLAT_MIN_EXTENT_M = 0.5
"""Large and flat (thinnest / largest side < FLAT_RATIO and largest side > FLAT_MIN_EXTENT_M): rugs, road markings."""

# (category, pattern on the lower-cased name); order matters, first match wins.
NAME_RULES: tuple[tuple[str, str], ...] = (
    ('lamp', r'lamp|light|lantern|chandelier|candle'),
    ('food', r'\bapples\b|bread(?! box)|butter|cake|hamburger|hot dog|french fries|chicken|steak|sugar|sushi|salad|'
             r'fruits'),
    ('bowl', r'bowl|plate|pan\b|tray(?! )|pottery|ashtray|hashtray'),
    ('mug', r'\bmug|\bcup\b|plastic cup|coffee cup|\bglass$|beer glass|cocktail glass|creamer'),
    ('bottle', r'bottle|flacon|\bmilk\b|oil servers|lip stick'),
    ('kitchen_appliance', r'toaster|kettle|blender|coffee (maker|brewer|machine|press)|mixer|microwave|squeezer|'
                          r'scale\b|sandwich maker|fryer|grill device|teapot|boiler|^cooker'),
    ('electronics', r'\bphone|iphone|tablet|laptop|ibook|imac|camera|cctv|remote|joystick|playstation|dvd|radio|'
                    r'speaker|stereo|mp3|headphones|keyboard|projector|\btv\b(?! stand)|printer|intercom|'
                    r'smoke detector|thermometer|calendar|clock|watch'),
    ('tool', r'hammer|drill|screwdriver|scissors|knife|\bsaw\b|pliers|tape measure|ruler|stapler|pencil|marker|'
             r'shovel|broom|^tool$|fork|spoon|flashlight|grinder|\btape\b|kitchen tools|utensils'),
    ('toy', r'teddy|doll|toy|rubik|puzzle|xylophone|car model|biplane|ball$|chessboard|card game|rocking horse|'
            r'dart game|table tennis bat|skateboard|tricycle'),
    ('plant', r'plant|ficus|cactus|bonsai|flower|tulips|orchids|yucca|bamboo|lily|spathiphyllum|christmas tree|'
              r'bush|hedge|succulent'),
    ('vase', r'vase|jar\b|cosmetics pot|spice tower|penbox'),
    ('box', r'\bbox\b|crate|gift|safe\b|locker|trunck|suitcase|briefcase|basket\b|dustbin|trash|bin\b|'
            r'letter tray'),
    ('bathroom', r'\bbath|toilet|basin|washbasin|sink(?! cabinet)|bidet|urinal|shower|lavatory|potty'),
    ('appliance', r'fridge|refrigerator|freezer|washing machine|dryer|oven|stove|hood|water heater|radiator|'
                  r'air conditioning|furnace|\bfan\b|cooktop|cooker|water cooler'),
    ('sofa', r'sofa|couch|day bed'),
    ('bed', r'\bbed\b|crib|mattress|futon$|sleeping bag|cradle'),
    ('cabinet', r'cabinet|wardrobe|bookcase|shelves|dresser|cupboard|drawers|vanity|tv stand|bedside table|'
                r'island|\bchest\b'),
    ('table', r'table|desk|workbench'),
    ('chair', r'chair|stool|seat\b|bench|puff|ottoman'),
    ('clothing', r'shoe|sneakers|slippers|bootie|mocassin|\bhat\b|\bcap\b|helmet|glove|jacket|trousers|skirt|'
                 r'short$|suit$|dress$|clothes|^towel$|bag\b|backpack|handbag|glasses'),
    ('book', r'\bbooks?\b|magazine'),
    ('can', r'\bcans?\b|tin can'),
)

# (reason, pattern on the lower-cased name): entries that are not free-standing objects.
EXCLUDE_NAME_RULES: tuple[tuple[str, str], ...] = (
    ('wall_plate', r'\bplug\b|switch|socket|entry bell|entry speech'),
    ('banknote', r'\bbill\b'),
    ('picture_frame', r'\bframe\b'),
    ('architecture', r'column|railing|fence|chimney|stair|escalator|swimming pool|sidewalk|parking|crossing|'
                     r'arrow|rails\b|curtain|window blind|shower curtain'),
)
EXCLUDE_SH3D_CATEGORIES = {'Characters': 'character', 'Doors and windows': 'door_or_window',
                           'Staircases': 'architecture'}


def category_for_name(name: str) -> str:
    """Return the coarse category of a catalog name (``other`` when no rule matches)."""
    lowered = name.lower()
    for category, pattern in NAME_RULES:
        if re.search(pattern, lowered):
            return category
    return OTHER_CATEGORY


def exclusion_reason(name: str, catalog_category: str, door_or_window: bool, extents_m: Sequence[float]) -> str:
    """Why a catalog entry is not a dataset object, or '' when it is one."""
    if door_or_window:
        return 'door_or_window'
    if catalog_category in EXCLUDE_SH3D_CATEGORIES:
        return EXCLUDE_SH3D_CATEGORIES[catalog_category]
    lowered = name.lower()
    for reason, pattern in EXCLUDE_NAME_RULES:
        if re.search(pattern, lowered):
            return reason
    largest, thinnest = max(extents_m), min(extents_m)
    if largest > MAX_EXTENT_M:
        return f'oversized ({largest:.2f} m > {MAX_EXTENT_M} m)'
    if largest > FLAT_MIN_EXTENT_M and thinnest < FLAT_RATIO * largest:
        return f'flat ({thinnest * 100:.1f} cm thin, {largest:.2f} m wide)'
    return ''


@dataclass(frozen=True)
class SplitMember:
    object_id: str
    category: str
    group: str
    """Objects with the same group (the mesh file sha256) always share a split."""


def _stable_rank(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assign_splits(members: Iterable[SplitMember]) -> dict[str, str]:
    """object_id -> 'train' | 'val' | 'test': per category, mesh groups ranked by hash and cut 70/10/20."""
    groups_by_category: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for member in members:
        groups_by_category[member.category][member.group].append(member.object_id)
    split_of: dict[str, str] = {}
    for category, groups in groups_by_category.items():
        ranked = sorted(groups, key=lambda group: _stable_rank(f'{category}/{group}'))
        n = len(ranked)
        # Rounded counts, but a category with ≥ 3 (≥ 5) meshes always gets a test (validation) mesh.
        n_test = max(round(SPLIT_FRACTIONS[2] * n), 1 if n >= 3 else 0)
        n_val = max(round(SPLIT_FRACTIONS[1] * n), 1 if n >= 5 else 0)
        for rank, group in enumerate(ranked):
            split = 'test' if rank < n_test else 'val' if rank < n_test + n_val else 'train'
            for object_id in groups[group]:
                split_of[object_id] = split
    return split_of


def typical_diameters(diameters_m: dict[str, float], categories: dict[str, str],
                      splits: dict[str, str]) -> dict[str, float]:
    """
    Category -> median bounding-sphere diameter (metres) over its train objects (all objects if none train).

    This is the node's no-depth placement prior (``ClassEntry.size_m``).
    """
    by_category: dict[str, list[float]] = defaultdict(list)
    train_by_category: dict[str, list[float]] = defaultdict(list)
    for object_id, diameter in diameters_m.items():
        by_category[categories[object_id]].append(diameter)
        if splits[object_id] == 'train':
            train_by_category[categories[object_id]].append(diameter)
    return {category: float(np.median(train_by_category.get(category) or values))
            for category, values in sorted(by_category.items())}
