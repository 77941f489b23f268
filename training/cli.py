"""
The ``mesc3d`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module with a ``main(argv) -> int``; this file only dispatches, importing the module
lazily so that ``mesc3d demo`` or ``mesc3d engine`` never pay for (or need) torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module with main(argv), one-line help)
SUBCOMMANDS = {
    'dataset': ('mesc3d_training.data.cli', 'make, check or preview a reconstruction dataset'),
    'train': ('mesc3d_training.train', 'train a model (3DSPL prompts, then reconstruction)'),
    'eval': ('mesc3d_training.evaluate', 'evaluate a checkpoint: CD-L1, CD-L2, F-scores, gallery'),
    'baselines': ('mesc3d_training.baselines', 'train/evaluate the baselines and write the comparison table'),
    'export': ('mesc3d_training.export', 'export a checkpoint to ONNX + model contract JSON'),
    'ship': ('mesc3d_training.ship', "write a shipped checkpoint's deployable form (ONNX + contract) beside it"),
    'engine': ('mesc3d_ros.engine_build', 'build a TensorRT engine from an exported ONNX model'),
    'bench': ('mesc3d_training.bench.backends', 'benchmark backends (and torch eager) on this machine'),
    'demo': ('mesc3d_training.demo.run', 'run the node on the shipped model against a camera stream'),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog='mesc3d', description=__doc__.strip().splitlines()[0])
    parser.add_argument('command', choices=sorted(SUBCOMMANDS), help='; '.join(
        f'{name}: {text}' for name, (_, text) in sorted(SUBCOMMANDS.items())))
    parser.add_argument('args', nargs=argparse.REMAINDER, help='arguments of the subcommand (see mesc3d CMD -h)')
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        return 0 if argv else 2
    ns = parser.parse_args(argv[:1])
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    module = importlib.import_module(SUBCOMMANDS[ns.command][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == '__main__':
    sys.exit(main())
