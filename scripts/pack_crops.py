"""
Pack pre-drawn training crops and the validation crops of the generated dataset for a lent GPU machine.

The pack (``training/crop_pack.py``) is what ``mesc3d train --pack`` reads instead of the dataset, which cannot
travel to that machine (64 MiB per call):

    .venv/bin/python scripts/pack_crops.py config/mesc3d_small.yaml --draws 4 --quality 85 --out build/gpu_pack.npz
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mesc3d_ros.config import load_config
from mesc3d_training.crop_pack import write_pack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('config', type=Path)
    parser.add_argument('--draws', type=int, default=6, help='augmented samples per training object')
    parser.add_argument('--quality', type=int, default=90, help='JPEG quality of the training crops')
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    write_pack(load_config(args.config), args.draws, args.quality, args.out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
