"""
``mesc3d train CONFIG``: MESC-3D's two training stages and the deployable best model.

Stage (a), 3DSPL (``prompt_learning.py``): class prompts and a point-cloud encoder aligned contrastively, frozen into
a class-embedding table (or reused from an earlier run: ``--class-table RUN``). Stage (b), reconstruction: the one
training loop (``loop.py``) on one of three sources of training samples (``train_data.py``): images drawn on the fly
from ``data.root`` (default), the frozen trunk's cached features (``train.feature_cache``), or a crop pack made
by ``scripts/pack_crops.py`` for a machine without the dataset (``--pack PATH``, with ``--device cuda`` the GPU
recipe). The best epoch on the validation split is written with ``checkpoint.save_model``.

One run directory holds everything::

    config.yaml                          the resolved config
    class_table.yaml prompts.safetensors prompt_log.csv       stage (a)
    checkpoints/                         resumable training state every epoch and on SIGINT/SIGTERM
                                         (train_checkpoint.py); ``--resume`` continues from it exactly
    best.safetensors best.yaml           the best validation epoch so far (its metrics in the YAML)
    epochs.csv steps.csv tb/             per-epoch / per-logged-step logs, TensorBoard (run_log.py)
    model.safetensors model.yaml         the deployable best model

Multi-GPU: ``torchrun --nproc_per_node G -m mesc3d_training.cli train CONFIG``; DDP with NCCL on CUDA, the same code
with gloo on CPU (``distributed.py``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import yaml
from safetensors.torch import load as load_safetensors_bytes
from torch import distributed as dist

from mesc3d_ros.config import Config, config_from_dict, config_to_dict, load_config, save_config
from mesc3d_training.checkpoint import load_weights, save_model
from mesc3d_training.distributed import DEVICE_CHOICES, DeviceChoice, Distributed, init_distributed
from mesc3d_training.loop import TrainingInterrupted, fit
from mesc3d_training.model import build_model
from mesc3d_training.prompt_learning import PROMPTS_FILE, TABLE_FILE, ClassTable, learn_class_table
from mesc3d_training.train_data import training_manifest_hash

log = logging.getLogger(__name__)

MODEL_STEM = 'model'


def train(cfg: Config, out_dir: Path, resume: bool = False, class_table_run: Path | None = None,
          device: DeviceChoice = 'auto') -> Path:
    """
    Run stage (a) and stage (b); return the deployable ``model.yaml``.

    ``class_table_run`` names an earlier run whose class table and prompts to reuse instead of running stage (a).

    ``resume`` continues from ``out_dir``'s checkpoint (and reuses its class table). Under torchrun every rank calls
    this; rank 0 alone runs stage (a) and writes files.
    """
    ctx = init_distributed(device)
    out_dir = Path(out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / 'config.yaml')
    stage_a = Path(class_table_run) if class_table_run else out_dir
    table = class_table_for(cfg, out_dir, resume, ctx) if class_table_run is None else \
        ClassTable.load(stage_a / TABLE_FILE, cfg.model.text_dim)
    torch.manual_seed(cfg.train.seed)   # identical initial weights on every rank
    model = build_model(cfg.model)
    result = fit(model, cfg, out_dir, table, resume, ctx)
    model_yaml = out_dir / f'{MODEL_STEM}.yaml'
    if ctx.is_main:
        load_weights(result.best_stem, model.cpu())
        metrics = {'val': {k: round(v, 6) for k, v in result.best_val.items()}, 'best_epoch': result.best_epoch,
                   'prompt_stage': table.metrics, 'train_samples_per_s': round(result.samples_per_s, 2),
                   'processes': ctx.world_size, 'device': ctx.device.type}
        # The trained 3DSPL prompts travel with the model so `mesc3d export --extra-classes` can embed new names
        # exactly as the table was embedded (absent when stage (a) was skipped).
        prompts_file = stage_a / PROMPTS_FILE
        prompts = load_safetensors_bytes(prompts_file.read_bytes()) if prompts_file.is_file() else None
        save_model(out_dir / MODEL_STEM, model, cfg, table.classes, table.generic, training_manifest_hash(cfg),
                   metrics, prompts=prompts)
        log.info('best model (epoch %d, val CD-L1 %.4f): %s', result.best_epoch, result.best_val['cd_l1'], model_yaml)
    if ctx.world_size > 1:
        dist.barrier()
    return model_yaml


def class_table_for(cfg: Config, out_dir: Path, resume: bool, ctx: Distributed) -> ClassTable:
    """Stage (a) on rank 0 (or the table a resumed run already learned), shared with the other ranks via the file."""
    path = out_dir / TABLE_FILE
    if ctx.is_main and not (resume and path.is_file()):
        learn_class_table(cfg, out_dir, ctx.device)
    if ctx.world_size > 1:
        dist.barrier()
    return ClassTable.load(path, cfg.model.text_dim)


# ---- command line ------------------------------------------------------------------------------------------------
def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``section.key=value`` strings (value parsed as YAML) applied through the strict loader."""
    data = config_to_dict(cfg)
    for item in overrides:
        key, sep, value = item.partition('=')
        section, dot, name = key.partition('.')
        if not sep or not dot or section not in data or name not in data[section]:
            raise ValueError(f'--set {item!r}: expected SECTION.KEY=VALUE with an existing key, e.g. train.lr=3e-4')
        data[section][name] = yaml.safe_load(value)
    return config_from_dict(data, where='config with --set overrides')


# flag -> the config key it overrides
OVERRIDE_FLAGS = (('epochs', 'train.epochs'), ('batch_size', 'train.batch_size'),
                  ('max_steps_per_epoch', 'train.max_steps_per_epoch'), ('data_root', 'data.root'),
                  ('pack', 'train.pack'))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the config file and the overrides that ``train`` and ``baselines`` share."""
    parser.add_argument('config', type=Path, help='config YAML, e.g. config/mesc3d_small.yaml')
    parser.add_argument('--epochs', type=int, help='override train.epochs')
    parser.add_argument('--batch-size', type=int, help='override train.batch_size')
    parser.add_argument('--max-steps-per-epoch', type=int, help='override train.max_steps_per_epoch')
    parser.add_argument('--data-root', help='override data.root')
    parser.add_argument('--pack', help='override train.pack: train on the pre-drawn crops of this pack '
                                       '(scripts/pack_crops.py) instead of drawing them from data.root')
    parser.add_argument('--set', action='append', default=[], metavar='SECTION.KEY=VALUE',
                        help='override any config value (YAML syntax), e.g. --set train.lr=3e-4; repeatable')


def config_from_arguments(args: argparse.Namespace) -> Config:
    overrides = list(args.set)
    for flag, key in OVERRIDE_FLAGS:
        if getattr(args, flag) is not None:
            overrides.append(f'{key}={getattr(args, flag)}')
    return apply_overrides(load_config(args.config), overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d train', description=__doc__.strip().splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument('--out', type=Path, help='run directory (default runs/<model name>)')
    parser.add_argument('--resume', action='store_true', help='continue the run in --out from its last checkpoint')
    parser.add_argument('--device', choices=DEVICE_CHOICES, default='auto',
                        help="where to train (default auto: CUDA when available); under torchrun, each rank's GPU")
    parser.add_argument('--class-table', type=Path, metavar='RUN',
                        help='skip stage (a): reuse the class table and prompts of this earlier run folder '
                             '(needed where the dataset is absent, e.g. with --pack on a lent GPU)')
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    out = args.out or Path('runs') / cfg.model.name
    try:
        train(cfg, out, resume=args.resume, class_table_run=args.class_table, device=args.device)
    except TrainingInterrupted as exc:
        log.warning('%s', exc)
        return 128 + exc.signum
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
