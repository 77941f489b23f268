"""
``python -m mesc3d_training.reliability soak|fuzz``: a reliability run of the live node, results in docs/benchmarks.md.

``soak`` streams test-split objects into the node for ``--duration-s`` and measures latency, drops and memory
(``soak.py``); ``fuzz`` publishes hypothesis-generated malformed messages at it and checks it still answers a good
frame (``fuzz.py``). The mixed adversarial campaign of issue 17 is ``python -m mesc3d_training.reliability.attack``.
``--write-docs`` replaces the run's block in docs/benchmarks.md (``<!-- reliability:KIND:start -->`` … ``end -->``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mesc3d_training.demo.processes import run_command
from mesc3d_training.reliability.fuzz import fuzz, fuzz_markdown
from mesc3d_training.reliability.run import BENCHMARKS_DOC, add_run_arguments, start_run
from mesc3d_training.reliability.soak import soak, soak_markdown
from mesc3d_training.reports.markdown_blocks import replace_block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m mesc3d_training.reliability',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('kind', choices=('soak', 'fuzz'))
    add_run_arguments(parser)
    parser.add_argument('--duration-s', type=float, default=600.0, help='soak length')
    parser.add_argument('--rate-hz', type=float, default=30.0, help='soak camera rate')
    parser.add_argument('--objects-per-frame', type=int, default=5)
    parser.add_argument('--examples', type=int, default=300, help='fuzz cases')
    args = parser.parse_args(argv)
    out = args.out.resolve()

    def run() -> int:
        ctx = start_run(args.model, args.engines_dir, args.params_file, out)
        if args.kind == 'soak':
            result = soak(ctx, args.duration_s, args.rate_hz, args.objects_per_frame, args.seed)
            markdown = soak_markdown(result, 'python -m mesc3d_training.reliability ' + ' '.join(argv or []))
        else:
            result = fuzz(ctx, args.examples, args.seed)
            markdown = fuzz_markdown(result, 'python -m mesc3d_training.reliability ' + ' '.join(argv or []))
        (out / f'{args.kind}.json').write_text(json.dumps(result, indent=1))
        print(markdown)
        if args.write_docs:
            replace_block(BENCHMARKS_DOC, f'reliability:{args.kind}', markdown, heading='Reliability')
        healthy = not result.get('node_crashed') and result.get('node_alive_after', True) and \
            result.get('good_frame_points_after', 1)
        return 0 if healthy else 1

    return run_command(args.kind, run)


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    sys.exit(main(sys.argv[1:]))
