"""Turn the weights from ``scripts/gpu_train.py`` into a deployable model and the equal-budget comparison table.

Reads ``<dir>/{mesc3d,psgn}.partN.safetensors`` and ``.json``; writes ``<dir>/mesc3d.{safetensors,yaml}`` with
``save_model`` (the shipped model's config, 3DSPL class table and prompts), evaluates ours, PSGN-style and retrieval
(by the PSGN feature) on val and test with the same ``evaluate_model`` as ``mesc3d baselines``, and writes
``<dir>/comparison.{md,json}``.

    .venv/bin/python scripts/gpu_compare.py runs/gpu_h200
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from mesc3d_ros.contract import write_atomic
from mesc3d_training.baselines import (EVAL_SPLITS, PSGN, build_retrieval, comparison_markdown, comparison_rows)
from mesc3d_training.checkpoint import load_model, save_model
from mesc3d_training.evaluate import evaluate_model
from mesc3d_training.prompt_learning import ClassTable


def load_parts(run: Path, arch: str) -> dict[str, torch.Tensor]:
    state = {}
    for part in sorted(run.glob(f'{arch}.part*.safetensors')):
        state.update(load_file(str(part)))
    if not state:
        raise FileNotFoundError(f'{run}: no {arch}.part*.safetensors')
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('run', type=Path, help='folder with the GPU run files')
    parser.add_argument('--model', type=Path, default=Path('models/mesc3d_small.yaml'),
                        help='deployable model whose config and class table the GPU run used')
    parser.add_argument('--prompts', type=Path, default=Path('runs/small_baselines/mesc3d/prompts.safetensors'),
                        help='the 3DSPL prompts that produced that class table (stored with the model)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    base = load_model(args.model)
    cfg, table = base.cfg, ClassTable(base.classes, base.generic_class, {})
    ours = base.model
    ours.load_state_dict(load_parts(args.run, 'mesc3d'))
    psgn = PSGN(cfg.model)
    psgn.load_state_dict(load_parts(args.run, 'psgn'))
    training = {arch: json.loads((args.run / f'{arch}.json').read_text()) for arch in ('mesc3d', 'psgn')}
    models = {'mesc3d': ours, 'psgn': psgn, 'retrieval': build_retrieval(psgn, cfg, batch_size=32)}
    reports = {name: {split: evaluate_model(model, table, cfg, split, args.run / f'{name}_eval_{split}', name=name,
                                            batch_size=32, zero_shot=split == 'test')
                      for split in EVAL_SPLITS} for name, model in models.items()}
    results = {name: {'best_epoch': 'final step', 'samples_per_s': round(t['samples'] / t['wall_s'], 1),
                      'wall_s': t['wall_s']} for name, t in training.items()}
    results['retrieval'] = results['psgn']
    comparison = comparison_rows(reports, results)
    write_atomic(args.run / 'comparison.json', json.dumps(comparison, indent=1).encode())
    lines = comparison_markdown(comparison, cfg).split('\n')
    facts = training['mesc3d']
    lines[2] = (f'Config `{cfg.model.name}`, data `{cfg.data.root}` (`{cfg.data.frame}` frame). Both trained for '
                f'{facts["steps"]} steps of batch {facts["batch_size"]} (equal budget) on one {facts["device"]} '
                f'(torch {facts["torch"]}) by `scripts/gpu_train.py` from {facts["pack_samples"]} pre-drawn augmented '
                'crops (`scripts/pack_crops.py`), final step (no checkpoint selection), evaluated here by '
                '`scripts/gpu_compare.py` with the evaluation of `mesc3d baselines`. Means over samples; F@0.1 '
                '(paper) = F-score at squared distance < 0.01, F@1% = at Euclidean distance < 0.01 (unit ball).')
    write_atomic(args.run / 'comparison.md', '\n'.join(lines).encode())
    metrics = {split: reports['mesc3d'][split][split]['mean'] for split in EVAL_SPLITS}
    save_model(args.run / 'mesc3d', ours, cfg, base.classes, base.generic_class, base.data_manifest_hash,
               {**metrics, 'training': training['mesc3d']}, fp16=True, prompts=load_file(str(args.prompts)))
    logging.info('wrote %s and %s', args.run / 'comparison.md', args.run / 'mesc3d.yaml')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
