"""
One-off conversion of the MORSE simulator's prop meshes to OBJ files the dataset generator reads.

The meshes are Debian ``morse-simulator-data``'s Blender ``.blend`` files; the generator reads the OBJ files with
``mesc3d dataset make --sources ...,morse`` (docs/data.md §1).

Only Blender reads ``.blend``; PyPI ``bpy`` 4.2.0 (Blender as a Python module, a 519 MB wheel, Python 3.11) does it
headless. It is not a project requirement: run this once in any Python 3.11 environment that has it, e.g.::

    python3.11 -m venv /tmp/bpyenv && /tmp/bpyenv/bin/pip install bpy==4.2.0
    /tmp/bpyenv/bin/python scripts/morse_to_obj.py --out data/morse_meshes

Writes ``<out>/<blend>/<object>.obj`` (+ ``.mtl``, textures copied) for every mesh object of the prop files, in
metres, Y up (Blender is Z up), each object at its own place in the file (the generator re-centres it), and
``<out>/index.json`` listing them with their Blender dimensions. Bounding-box helper meshes (``*_bb*``) and the
scene planes and cubes the files carry are skipped. Takes seconds.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import bpy

PROPS = Path('/usr/share/morse/data/props')
BLENDS = ('kitchen_objects', 'furnitures', 'misc_objects', 'objects', 'computer_parts')
SKIP = re.compile(r'_bb(_\d+)?$|^Cube$|^Plane$')
"""Physics bounding boxes and the floor/backdrop meshes are not objects."""


def convert(out: Path) -> list[dict]:
    index = []
    for blend in BLENDS:
        bpy.ops.wm.open_mainfile(filepath=str(PROPS / f'{blend}.blend'))
        folder = out / blend
        folder.mkdir(parents=True, exist_ok=True)
        for obj in [o for o in bpy.data.objects if o.type == 'MESH' and not SKIP.search(o.name)]:
            bpy.ops.object.select_all(action='DESELECT')
            obj.select_set(True)
            bpy.context.view_layer.objects.active = obj
            path = folder / f'{obj.name}.obj'
            bpy.ops.wm.obj_export(filepath=str(path), export_selected_objects=True, apply_modifiers=True,
                                  export_materials=True, path_mode='COPY', forward_axis='NEGATIVE_Z', up_axis='Y')
            index.append({'blend': blend, 'name': obj.name, 'file': str(path.relative_to(out)),
                          'dimensions_m': [round(float(v), 4) for v in obj.dimensions]})
    (out / 'index.json').write_text(json.dumps({'source': str(PROPS), 'objects': index}, indent=1))
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--out', type=Path, required=True, help='output folder, e.g. data/morse_meshes')
    args = parser.parse_args()
    print(f'{len(convert(args.out))} objects -> {args.out / "index.json"}')


if __name__ == '__main__':
    main()
