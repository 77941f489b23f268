"""Pack pre-cropped training samples of the generated dataset into one small .npz for a lent GPU machine.

The dataset (1.3 GB) cannot travel to the GPU machine (64 MiB per call), so this draws ``--draws`` augmented
training samples per object with the same loader the CPU training uses (crop, box jitter, colour jitter, flips,
viewer-frame rotation) and stores each as a JPEG crop plus its 3×3 canonical→viewer matrix; every object's canonical
unit-ball cloud is stored once (float16). ``scripts/gpu_train.py`` rebuilds the viewer-frame ground truth as
``canonical @ rotation.T``, exactly what ``build_sample`` does.

    .venv/bin/python scripts/pack_crops.py config/mesc3d_small.yaml --draws 6 --out build/gpu_pack.npz
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mesc3d_ros.config import load_config
from mesc3d_training.data import layout
from mesc3d_training.data.dataset import ReconstructionDataset

LOGGER = logging.getLogger('pack_crops')
POINTS_PER_OBJECT = 4096


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', type=Path)
    parser.add_argument('--draws', type=int, default=6, help='augmented samples per training object')
    parser.add_argument('--quality', type=int, default=90, help='JPEG quality of the crops')
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cfg = load_config(args.config)
    dataset = ReconstructionDataset(cfg.data, 'train', cfg.model.image_size, train=True)
    object_ids = sorted(dataset._objects)
    index_of = {object_id: i for i, object_id in enumerate(object_ids)}
    rng = np.random.default_rng(0)
    clouds = np.empty((len(object_ids), POINTS_PER_OBJECT, 3), dtype=np.float16)  # canonical unit ball
    for object_id in object_ids:
        dense = np.load(layout.points_path(dataset.root, dataset._objects[object_id], object_id))
        clouds[index_of[object_id]] = dense[rng.choice(len(dense), POINTS_PER_OBJECT, replace=False)]
    jpegs, rotations, objects, categories = [], [], [], []
    for _ in range(args.draws):
        for item in tqdm(range(len(dataset)), desc='draw'):
            sample = dataset[item]
            crop = (sample['image'].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
            ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, args.quality])
            if not ok:
                raise RuntimeError(f'JPEG encoding failed for {sample["object_id"]}')
            jpegs.append(jpeg.tobytes())
            rotations.append(sample['rotation'])
            objects.append(index_of[sample['object_id']])
            categories.append(sample['category'])
    offsets = np.cumsum([0] + [len(j) for j in jpegs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, jpeg_bytes=np.frombuffer(b''.join(jpegs), dtype=np.uint8), jpeg_offsets=offsets,
             rotations=np.stack(rotations), objects=np.asarray(objects, dtype=np.int32),
             categories=np.asarray(categories), clouds=clouds, object_ids=np.asarray(object_ids))
    LOGGER.info('%d samples of %d objects -> %s (%.1f MB)', len(jpegs), len(object_ids), args.out,
                args.out.stat().st_size / 1e6)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
