"""``mesc3d dataset make|check|stats|preview``: argument parsing only; the work is in the module of each command."""

from __future__ import annotations

import argparse
import json
import logging

from mesc3d_training.data.categories import DEFAULT_UNSEEN_SOURCE
from mesc3d_training.data.check import DEFAULT_DEPTH_TOLERANCE
from mesc3d_training.data.generate import DEFAULT_IMAGE_SIZE, DEFAULT_VIEWS
from mesc3d_training.data.sources import DEFAULT_PROCEDURAL_COUNT, SOURCE_KINDS

log = logging.getLogger(__name__)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(',') if item.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='mesc3d dataset', description=__doc__.strip().splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True)

    make = commands.add_parser('make', help='render the dataset (resumable: finished objects are kept)')
    make.add_argument('--out', required=True, help='dataset folder, e.g. data/homeobjects')
    make.add_argument('--seed', type=int, default=0, help='run seed; each object derives its own from it')
    make.add_argument('--views', type=int, default=DEFAULT_VIEWS, help='views per object')
    make.add_argument('--limit', type=int, default=0, help='render a hash-ranked subset of N objects (0 = all)')
    make.add_argument('--objects', type=_csv, default=(), help='comma-separated object ids (overrides --limit)')
    make.add_argument('--sources', type=_csv, default=SOURCE_KINDS,
                      help=f'comma-separated mesh sources: {", ".join(SOURCE_KINDS)}')
    make.add_argument('--procedural', type=int, default=DEFAULT_PROCEDURAL_COUNT,
                      help='number of procedural graspables (source procedural)')
    make.add_argument('--unseen', default=DEFAULT_UNSEEN_SOURCE,
                      help='source whose objects form the unseen split (never train or val)')
    make.add_argument('--workers', type=int, default=2, help='render processes (one EGL context each)')
    make.add_argument('--image-size', type=int, default=DEFAULT_IMAGE_SIZE, help='square render size in pixels')

    check = commands.add_parser('check', help='report missing, corrupt or inconsistent files (non-zero exit)')
    check.add_argument('root', help='dataset folder')
    check.add_argument('--depth-tolerance', type=float, default=DEFAULT_DEPTH_TOLERANCE,
                       help='share of mask pixels (off the 1-px border band) that may disagree with depth > 0')

    stats = commands.add_parser('stats', help='agreement of clouds, cameras, masks and depth (JSON summary)')
    stats.add_argument('root', help='dataset folder')
    stats.add_argument('--view-step', type=int, default=6, help='views 0, N, 2N, ... of every object')
    stats.add_argument('--depth-every', type=int, default=10, help='depth check on every N-th object (view 0)')

    preview = commands.add_parser('preview', help='contact sheet: views, mask outlines, projected GT points')
    preview.add_argument('root', help='dataset folder')
    preview.add_argument('--out', required=True, help='PNG to write')
    preview.add_argument('--columns', type=int, default=8)
    preview.add_argument('--rows', type=int, default=6)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == 'make':
        from mesc3d_training.data.generate import make_dataset

        make_dataset(args.out, seed=args.seed, views=args.views, limit=args.limit, object_ids=args.objects,
                     sources=args.sources, workers=args.workers, image_size=args.image_size,
                     procedural_count=args.procedural, unseen_source=args.unseen)
        return 0
    if args.command == 'check':
        from mesc3d_training.data.check import check_dataset

        problems = check_dataset(args.root, progress=True, depth_tolerance=args.depth_tolerance)
        for problem in problems:
            log.error('%s', problem)
        if problems:
            log.error('%s: %d problem(s)', args.root, len(problems))
            return 1
        log.info('%s: no problems found', args.root)
        return 0
    if args.command == 'stats':
        from mesc3d_training.data.alignment import dataset_alignment

        # the result, on stdout
        print(json.dumps(dataset_alignment(args.root, args.view_step, args.depth_every), indent=1))
        return 0
    from mesc3d_training.data.preview import write_preview

    log.info('wrote %s', write_preview(args.root, args.out, columns=args.columns, rows=args.rows))
    return 0
