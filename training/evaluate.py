"""
``mesc3d eval CHECKPOINT --split test``: per-category reconstruction metrics, a table and a gallery.

Metrics (``metrics.py``, method.md §7), per sample, on the model's N points against the dataset's seeded
``num_gt_points`` ground truth, both in the unit ball of the data frame:

- CD-L1 = ½ (mean √d1 + mean √d2) and CD-L2 = mean d1 + mean d2 (d = squared nearest-neighbour distance);
- F@paper: F-score with precision/recall at **squared** distance < 0.01, i.e. 0.1 Euclidean (MESC-3D's threshold);
- F@1%: F-score at Euclidean distance < 0.01, i.e. squared < 1e-4 (the common F-score@1 %).

``mean`` averages over samples (as upstream), ``category_mean`` over categories. Beside ``test``, the report holds the
``unseen`` split (a whole collection never trained on) when the dataset has one, and the ``zero_shot`` split (the
held-out categories, embedded from their names only) when the data config holds out categories the dataset has.
``--views N`` scores views 0..N-1 of every object (``all``: every view; default: the config's ``eval_views``).
Category names the model's class table does not know get the generic embedding, and are logged.
Everything is deterministic: evaluation items use fixed views, crops and seeded ground-truth subsets, the model runs
in eval mode, and the gallery shows the first objects of each category in dataset order.

``--onnx CONTRACT --precision int8`` scores an exported model file (float32, float16 or INT8, run by ONNX Runtime on
the CPU exactly as the node runs it) in place of the checkpoint's torch module; the checkpoint still supplies the
config and class table, and must be the one the contract was exported from (same config hash).

Outputs in ``--out``: ``metrics.json``, ``metrics.md``, ``gallery.png`` (input crop, prediction and ground truth
from the front and from above, a few objects per category).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mesc3d_ros.config import Config, config_hash
from mesc3d_ros.contract import load_contract, write_atomic
from mesc3d_ros.inference import OnnxRuntimeBackend
from mesc3d_training.checkpoint import checkpoint_stem, load_model, save_model
from mesc3d_training.data import layout
from mesc3d_training.data.categories import UNSEEN_SPLIT, ZERO_SHOT_SPLIT
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.metrics import (FSCORE_1PCT_SQ_THRESHOLD, FSCORE_PAPER_SQ_THRESHOLD, METRIC_KEYS,
                                     reconstruction_metrics)
from mesc3d_training.prompt_learning import ClassTable
from mesc3d_training.train_data import data_manifest_hash

matplotlib.use('Agg')   # headless: files only
from matplotlib import pyplot as plt  # noqa: E402  (after the backend choice)

log = logging.getLogger(__name__)

THRESHOLDS = {
    'fscore_paper': f'F-score at squared distance < {FSCORE_PAPER_SQ_THRESHOLD} (Euclidean 0.1, unit ball; MESC-3D)',
    'fscore_1pct': f'F-score at squared distance < {FSCORE_1PCT_SQ_THRESHOLD} (Euclidean 0.01 = 1 % of the radius)',
}
TABLE_COLUMNS = (('cd_l1', 'CD-L1 ×10²', 100.0), ('cd_l2', 'CD-L2 ×10²', 100.0),
                 ('fscore_paper', 'F@0.1 (paper)', 1.0), ('fscore_1pct', 'F@1%', 1.0))


@torch.no_grad()
def score_split(model: nn.Module, table: ClassTable, cfg: Config, split: str, device: torch.device,
                batch_size: int, gallery_per_category: int = 0) -> tuple[dict, list[dict]]:
    """
    Evaluate ``model`` on one split; returns (summary, gallery samples).

    The summary holds ``num_samples``, ``mean``, ``category_mean`` and ``per_category`` (count + METRIC_KEYS).
    """
    dataset = ReconstructionDataset(cfg.data, split, cfg.model.image_size, train=False)
    unknown = sorted(set(dataset.categories) - {entry.name for entry in table.classes})
    if unknown and table.classes:  # an empty table is --generic-class: every category unknown by design
        log.warning("%s: categories %s are not in the model's class table; they get the generic embedding",
                    split, unknown)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=cfg.train.num_workers)
    model.to(device).eval()
    per_category: dict[str, list[dict]] = defaultdict(list)
    gallery = []
    for batch in loader:
        image = batch['image'].to(device)                                          # (B, 3, S, S) in [0, 1]
        pred = model(image, table.embeddings_for(batch['category']).to(device)).float()   # (B, N, 3) unit ball
        metrics = reconstruction_metrics(pred, batch['points'].to(device))
        for i, category in enumerate(batch['category']):
            row = {key: float(metrics[key][i]) for key in METRIC_KEYS}
            per_category[category].append(row)
            if len(per_category[category]) <= gallery_per_category:
                gallery.append({'category': category, 'object_id': batch['object_id'][i], 'cd_l1': row['cd_l1'],
                                'image': batch['image'][i].permute(1, 2, 0).numpy(),
                                'pred': pred[i].cpu().numpy(), 'gt': batch['points'][i].numpy()})
    rows = [row for category_rows in per_category.values() for row in category_rows]
    summary = {
        'num_samples': len(rows),
        'mean': _mean(rows),
        'category_mean': {key: float(np.mean([_mean(r)[key] for r in per_category.values()])) for key in METRIC_KEYS},
        'per_category': {c: {'count': len(r), **_mean(r)} for c, r in sorted(per_category.items())},
    }
    return summary, gallery


def _mean(rows: list[dict]) -> dict:
    return {key: float(np.mean([row[key] for row in rows])) for key in METRIC_KEYS}


def companion_splits(cfg: Config, split: str) -> list[str]:
    """
    Return the splits reported beside ``test``.

    ``unseen`` when the dataset has one, ``zero_shot`` when the config holds out categories that the dataset has (a
    dataset made elsewhere may lack them: that is logged, not an error).
    """
    if split != 'test' or cfg.data.layout != 'generated':
        return []
    manifest = layout.read_manifest(Path(cfg.data.root))
    extra = [UNSEEN_SPLIT] if manifest['splits'].get(UNSEEN_SPLIT) else []
    present = sorted(set(cfg.data.held_out_categories) & set(manifest['categories']))
    if cfg.data.held_out_categories and not present:
        log.warning('%s has none of the held-out categories %s: no zero_shot split', cfg.data.root,
                    list(cfg.data.held_out_categories))
    return extra + ([ZERO_SHOT_SPLIT] if present else [])


def evaluate_model(model: nn.Module, table: ClassTable, cfg: Config, split: str, out_dir: Path, name: str,
                   batch_size: int = 16, gallery_per_category: int = 2, zero_shot: bool = True) -> dict:
    """
    Score ``split`` (and, with ``zero_shot``, the companion splits of ``test``: unseen, zero_shot).

    Write metrics.json/.md and gallery.png into ``out_dir``; returns the report.
    """
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, gallery = score_split(model, table, cfg, split, device, batch_size, gallery_per_category)
    report = {'model': name, 'split': split, 'data_root': cfg.data.root, 'frame': cfg.data.frame,
              'eval_views': cfg.data.eval_views, 'data_manifest_hash': data_manifest_hash(cfg),
              'thresholds': THRESHOLDS, split: summary}
    for extra in companion_splits(cfg, split) if zero_shot else []:
        report[extra], extra_gallery = score_split(model, table, cfg, extra, device, batch_size,
                                                   gallery_per_category)
        gallery += extra_gallery
    write_atomic(out_dir / 'metrics.json', json.dumps(report, indent=1).encode())
    write_atomic(out_dir / 'metrics.md', markdown_report(report).encode())
    if gallery:
        write_gallery(gallery, out_dir / 'gallery.png', title=f'{name}: {split}')
    log.info('%s on %s: CD-L1 %.4f, F@paper %.3f (%d samples) -> %s', name, split, summary['mean']['cd_l1'],
             summary['mean']['fscore_paper'], summary['num_samples'], out_dir)
    return report


def markdown_report(report: dict) -> str:
    """Return the per-category tables of a report as markdown."""
    lines = [f'# {report["model"]}: evaluation on `{report["split"]}`', '',
             f'Data `{report["data_root"]}` (manifest `{report["data_manifest_hash"][:12]}`), ground truth in the '
             f'`{report["frame"]}` frame, unit ball. ' + '; '.join(report['thresholds'].values()) + '.', '']
    for split in dict.fromkeys((report['split'], UNSEEN_SPLIT, ZERO_SHOT_SPLIT)):  # ordered, no repeats
        if split not in report:
            continue
        summary = report[split]
        lines += [f'## `{split}` ({summary["num_samples"]} samples)', '', metric_table(
            [(c, row['count'], row) for c, row in summary['per_category'].items()]
            + [('**mean over samples**', summary['num_samples'], summary['mean']),
               ('**mean over categories**', len(summary['per_category']), summary['category_mean'])],
            first_column='category'), '']
    return '\n'.join(lines)


def metric_table(rows: list[tuple[str, int, dict]], first_column: str) -> str:
    """Markdown table: one row per (label, count, metrics)."""
    header = f'| {first_column} | n | ' + ' | '.join(title for _, title, _ in TABLE_COLUMNS) + ' |'
    rule = '|---|---:|' + '---:|' * len(TABLE_COLUMNS)
    body = [f'| {label} | {count} | ' + ' | '.join(f'{metrics[key] * scale:.3f}' for key, _, scale in TABLE_COLUMNS)
            + ' |' for label, count, metrics in rows]
    return '\n'.join([header, rule, *body])


def write_gallery(samples: list[dict], path: Path, title: str) -> Path:
    """
    Draw one row per sample into ``path``.

    Each row: input crop | prediction and ground truth seen from the camera (x right, y down) | the same from
    above (x right, z forward, up = far). Colour encodes the third axis.
    """
    fig, axes = plt.subplots(len(samples), 5, figsize=(12.5, 2.5 * len(samples)), squeeze=False)
    for row, sample in zip(axes, samples):
        row[0].imshow(np.clip(sample['image'], 0, 1))
        row[0].set_title(f'{sample["category"]} {sample["object_id"][:18]}', fontsize=7)
        for ax, cloud, label, (u, v, depth) in (
                (row[1], sample['pred'], f'pred, CD-L1 {sample["cd_l1"]:.3f}', (0, 1, 2)),
                (row[2], sample['gt'], 'ground truth', (0, 1, 2)),
                (row[3], sample['pred'], 'pred, top', (0, 2, 1)),
                (row[4], sample['gt'], 'ground truth, top', (0, 2, 1))):
            ax.scatter(cloud[:, u], cloud[:, v], c=cloud[:, depth], s=0.6, cmap='viridis', vmin=-1, vmax=1)
            ax.set_xlim(-1, 1)
            # Camera view: image y points down. Top view: z (away from the camera) points up.
            ax.set_ylim((1, -1) if v == 1 else (-1, 1))
            ax.set_aspect('equal')
            ax.set_title(label, fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))   # keep a strip for the title
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


class ExportedModel(nn.Module):
    """An exported model file run by ONNX Runtime behind the module interface :func:`score_split` calls."""

    def __init__(self, contract_path: Path, precision: str) -> None:
        super().__init__()
        self.backend = OnnxRuntimeBackend(load_contract(contract_path), contract_path, max_batch=64,
                                          precision=precision)

    def forward(self, image: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1], (B, D) -> (B, N, 3) float32 unit ball, on the CPU."""
        return torch.from_numpy(self.backend.run(image.cpu().numpy(), class_embedding.cpu().numpy()))


ALL_VIEWS = 10**6
"""``--views all``: more than any dataset has; the dataset clamps it to the views it holds."""


def _views(text: str) -> int:
    if text == 'all':
        return ALL_VIEWS
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f'--views takes a positive number or "all", got {text!r}')
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d eval', description=__doc__.strip().splitlines()[0])
    parser.add_argument('checkpoint', type=Path, help='deployable model: <stem>, <stem>.yaml or <stem>.safetensors')
    parser.add_argument('--split', default='test', help='train, val, test, unseen or zero_shot (default test)')
    parser.add_argument('--views', type=_views,
                        help="views per object: N (views 0..N-1) or all (default: the config's eval_views)")
    parser.add_argument('--out', type=Path, help='output folder (default runs/eval_<checkpoint name>_<split>)')
    parser.add_argument('--data-root', help='dataset folder, if not the one the checkpoint was trained on')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--gallery-per-category', type=int, default=2)
    parser.add_argument('--onnx', type=Path, metavar='CONTRACT',
                        help='score this export of the checkpoint (contract JSON) with ONNX Runtime instead of torch')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'fp16', 'int8'),
                        help='which model file of --onnx to score')
    parser.add_argument('--ship', type=Path, metavar='STEM',
                        help='also write the evaluated model as a deployable checkpoint STEM.safetensors/.yaml with '
                             'float16 weights and these results in its metrics (how models/ is made)')
    parser.add_argument('--generic-class', action='store_true',
                        help="give every sample the generic class's embedding instead of its category's: what the "
                             'class prior is worth (the node does this for class names it does not know)')
    args = parser.parse_args(argv)
    if args.generic_class and args.ship:
        raise ValueError('--ship records the model with its class table; it cannot be combined with --generic-class')
    loaded = load_model(args.checkpoint)
    cfg = loaded.cfg
    if args.data_root:
        cfg = replace(cfg, data=replace(cfg.data, root=args.data_root))
    if args.views is not None:
        cfg = replace(cfg, data=replace(cfg.data, eval_views=args.views))
    if loaded.data_manifest_hash and loaded.data_manifest_hash != data_manifest_hash(cfg):
        log.warning('%s was trained on dataset %s…, evaluating on %s…', args.checkpoint,
                    loaded.data_manifest_hash[:12], data_manifest_hash(cfg)[:12])
    stem = checkpoint_stem(args.checkpoint)
    model, name = loaded.model, cfg.model.name
    if args.onnx:
        if args.ship:
            raise ValueError('--ship writes the torch checkpoint; it cannot be combined with --onnx')
        if load_contract(args.onnx).config_hash != config_hash(loaded.cfg):
            raise ValueError(f'{args.onnx} was not exported from {args.checkpoint} (config hashes differ)')
        model, name = ExportedModel(args.onnx, args.precision), f'{name} (ONNX Runtime, {args.precision})'
    suffix = (f'_onnx_{args.precision}' if args.onnx else '') + ('_generic' if args.generic_class else '')
    out = args.out or Path('runs') / f'eval_{stem.name}_{args.split}{suffix}'
    # An empty class list sends every category name to the generic entry (ClassTable.embeddings_for).
    classes = () if args.generic_class else loaded.classes
    if args.generic_class:
        name = f'{name} (generic class)'
        log.info('--generic-class: every sample gets the generic class embedding')
    report = evaluate_model(model, ClassTable(classes, loaded.generic_class, {}), cfg, args.split, out,
                            name=name, batch_size=args.batch_size,
                            gallery_per_category=args.gallery_per_category)
    if args.ship:
        results = {split: {'mean': report[split]['mean'], 'num_samples': report[split]['num_samples']}
                   for split in (args.split, UNSEEN_SPLIT, ZERO_SHOT_SPLIT) if split in report}
        path = save_model(args.ship, loaded.model, loaded.cfg, loaded.classes, loaded.generic_class,
                          loaded.data_manifest_hash, {**loaded.metrics, 'evaluation': results}, fp16=True,
                          prompts=loaded.prompts)
        log.info('shipped %s (float16 weights)', path)
    return 0
