"""
Per-module parameters, multiply-adds and tensor shapes of MESC-3D presets: the tables in docs/model.md.

    .venv/bin/python -m mesc3d_training.reports.model_summary                      # print, paper + small presets
    .venv/bin/python -m mesc3d_training.reports.model_summary --timing --write docs/model.md

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; flops / 2) for one
object in eval mode; elementwise work (BatchNorm, activations, the W ⊙ F1 gate, γx + β) is not counted. With
``--write`` the generated block between the two markers in the file is replaced and the rest is left alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mesc3d_ros.config import ModelConfig, load_config
from mesc3d_training.model import MESC3D, build_model
from mesc3d_training.reports.markdown_blocks import replace_block

LOGGER = logging.getLogger(__name__)
PRESETS = (Path('config/mesc3d_paper.yaml'), Path('config/mesc3d_small.yaml'))
BLOCK = 'model_summary'

# Table rows: label -> regex over parameter / module names (relative to MESC3D). Modules matched by MACs are the
# ones FlopCounterMode reports by name; the AdaPN row counts the whole modulation (selection + style conv), whose
# low-rank path uses the style weight without calling the conv module.
GROUPS = (
    ('ResNet backbone', r'image_encoder\.backbone(\.|$)'),
    ('image tokens (Linear / cell projection + pooling)', r'image_encoder\.(to_tokens|cell_proj|cell_pool)(\.|$)'),
    ('point tokens (sphere encoder, folded)', r'point_tokens(\.|$)'),
    ('MIT (4 interlaced blocks)', r'mit(\.|$)'),
    ('class projection (text_dim → class_dim)', r'class_proj(\.|$)'),
    ('decoder stage-1 conv + BN', r'decoder\.(input_conv|input_norm|seed_conv)(\.|$)'),
    ('decoder stage 2..k convs + BN', r'decoder\.convs(\.|$)'),
    ('ESM selection maps W_i', r'decoder\.modulations\.\d+\.selection(\.|$)'),
    ('AdaPN style convs (γ, β)', r'decoder\.modulations\.\d+(\.style(\.|$)|$)'),
    ('tail convs + 3-d head', r'decoder\.(tail|head)(\.|$)'),
)


@dataclass(frozen=True)
class Row:
    label: str
    trainable: int
    frozen: int
    """Non-trainable tensors (buffers that travel with the weights, e.g. the folded point tokens)."""
    macs: int


def count_macs(model: MESC3D) -> dict[str, int]:
    """Count the MACs of one eval forward at batch 1, per called module name (relative to the model; '' = total)."""
    cfg = model.cfg
    image = torch.rand(1, 3, cfg.image_size, cfg.image_size)
    embedding = torch.randn(1, cfg.text_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(image, embedding)
    prefix = type(model).__name__
    return {('' if name == prefix else name.removeprefix(prefix + '.')): sum(ops.values()) // 2
            for name, ops in counter.get_flop_counts().items() if name == prefix or name.startswith(prefix + '.')}


def summarise(model: MESC3D) -> list[Row]:
    """One row per GROUPS entry plus a total; every parameter and buffer is counted exactly once."""
    macs = count_macs(model)
    params = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: b.numel() for name, b in model.state_dict().items() if name not in params}
    rows, claimed = [], set()
    for label, pattern in GROUPS:
        regex = re.compile(pattern)
        mine = {name for name in [*params, *frozen] if regex.match(name) and name not in claimed}
        claimed |= mine
        # Top-level matching modules only, so a parent and its children are not both summed.
        called = [name for name in macs if name and regex.match(name)]
        top = [name for name in called if not any(name.startswith(other + '.') for other in called)]
        rows.append(Row(label, sum(params.get(n, 0) for n in mine), sum(frozen.get(n, 0) for n in mine),
                        sum(macs[n] for n in top)))
    unclaimed = (set(params) | set(frozen)) - claimed
    if unclaimed:
        raise RuntimeError(f'model_summary: tensors in no group: {sorted(unclaimed)}')
    rows.append(Row('**total**', sum(params.values()), sum(frozen.values()), macs['']))
    return rows


def stage_shapes(model: MESC3D) -> list[tuple[str, tuple[int, ...]]]:
    """List (module name, output shape at batch 1) for the blocks of the data flow, in call order."""
    cfg = model.cfg
    watched = {'image_encoder': model.image_encoder, 'point_tokens': model.point_tokens, 'mit': model.mit,
               'class_proj': model.class_proj}
    watched |= {f'decoder.modulations.{i}': m for i, m in enumerate(model.decoder.modulations)}
    watched |= {'decoder.tail': model.decoder.tail, 'decoder (output)': model.decoder}
    shapes: list[tuple[str, tuple[int, ...]]] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: shapes.append((name, tuple(out.shape))))
             for name, module in watched.items()]
    hooks.append(model.decoder.register_forward_pre_hook(
        lambda _m, args: shapes.append(('decoder (input F1)', tuple(args[0].shape)))))
    try:
        with torch.no_grad():
            model.eval()(torch.rand(1, 3, cfg.image_size, cfg.image_size), torch.randn(1, cfg.text_dim))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def time_model(model: MESC3D, batch: int, train: bool, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one forward (eval) or forward + backward (train) at ``batch`` on CPU."""
    cfg = model.cfg
    image = torch.rand(batch, 3, cfg.image_size, cfg.image_size)
    embedding = torch.randn(batch, cfg.text_dim)
    model.train(train)
    best = float('inf')
    for _ in range(repeats + 1):    # the first run warms up allocator and kernels
        start = time.perf_counter()
        if train:
            model(image, embedding).square().mean().backward()
        else:
            with torch.no_grad():
                model(image, embedding)
        best = min(best, time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return best


def markdown(configs: list[ModelConfig], timing: bool) -> str:
    models = [build_model(cfg) for cfg in configs]
    summaries = [summarise(model) for model in models]
    names = [cfg.name for cfg in configs]
    lines = ['### Parameters and multiply-adds per module', '',
             'Trainable parameters / MACs per object (eval, batch 1); frozen = non-trainable tensors saved with the '
             'weights (buffers, BatchNorm statistics).', '',
             '| module | ' + ' | '.join(f'{n} params | {n} MMAC' for n in names) + ' |',
             '|---|' + '---:|---:|' * len(names)]
    for i, (label, _) in enumerate((*GROUPS, ('**total**', ''))):
        cells = []
        for rows in summaries:
            row = rows[i]
            frozen = f' (+{row.frozen:,} frozen)' if row.frozen else ''
            cells.append(f'{row.trainable:,}{frozen} | {row.macs / 1e6:,.1f}')
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    paper_macs = summaries[0][-1].macs
    lines += ['', 'MACs relative to the first config: ' + ', '.join(
        f'{n} {rows[-1].macs / paper_macs:.1%}' for n, rows in zip(names, summaries)) + '.', '']
    for cfg, model in zip(configs, models):
        lines += [f'### Tensor shapes: {cfg.name} (batch B = 1)', '', '| module | output shape |', '|---|---|']
        lines += [f'| {name} | {tuple(shape)} |' for name, shape in stage_shapes(model)]
        lines.append('')
    if timing:
        threads = torch.get_num_threads()
        load = os.getloadavg()[0]    # other processes on a shared machine slow these numbers down; record it
        lines += [f'### CPU timings ({threads} torch threads, best of 3, 1-min load average {load:.1f} at start)', '',
                  '| config | eval forward, batch 1 (ms) | train forward + backward, batch 16 (s) |', '|---|---:|---:|']
        for cfg, model in zip(configs, models):
            train = f'{time_model(model, 16, train=True):.2f}' if cfg.name != 'paper' else 'not measured (GPU config)'
            lines.append(f'| {cfg.name} | {time_model(model, 1, train=False) * 1e3:.0f} | {train} |')
        lines.append('')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m mesc3d_training.reports.model_summary',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('configs', nargs='*', type=Path, default=list(PRESETS),
                        help='config YAMLs; the first is the reference for relative MACs (default: paper, small)')
    parser.add_argument('--timing', action='store_true', help='also time forward / forward+backward on this CPU')
    parser.add_argument('--write', type=Path, help='replace the generated block of this markdown file')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    torch.manual_seed(0)
    body = markdown([load_config(path).model for path in args.configs], args.timing)
    if args.write:
        replace_block(args.write, BLOCK, body, '5. Generated tables')
        LOGGER.info('wrote the model summary into %s', args.write)
    else:
        print(body)   # the report itself is this command's output
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
