"""``mesc3d train CONFIG``: MESC-3D's two training stages and the deployable best model.

Stage (a), 3DSPL (``prompt_learning.py``): class prompts and a point-cloud encoder aligned contrastively, frozen into
a class-embedding table. Stage (b), reconstruction (:func:`fit`): the network from image + class embedding to points,
CD-L1 (``TrainConfig.loss``), Adam with warm-up + cosine per step (``schedule.py``), validation every epoch, the best
epoch chosen on the **validation** split's CD-L1. The result is written with ``checkpoint.save_model``.

One run directory holds everything::

    config.yaml                          the resolved config
    class_table.yaml prompts.safetensors prompt_log.csv       stage (a)
    checkpoints/                         resumable training state every epoch and on SIGINT/SIGTERM
                                         (train_checkpoint.py); ``--resume`` continues from it exactly
    best_weights.safetensors             weights of the best validation epoch so far (metrics in its metadata)
    epochs.csv steps.csv tb/             per-epoch / per-step logs, TensorBoard
    model.safetensors model.yaml         the deployable best model

Multi-GPU: ``torchrun --nproc_per_node G -m mesc3d_training.cli train CONFIG``; DDP with NCCL on CUDA, the same code
with gloo on CPU. Data order and augmentation depend only on (seed, epoch, position), never on the number of
DataLoader workers or on where a run was interrupted, so a resumed run repeats the uninterrupted one step for step.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mesc3d_ros.config import Config, TrainConfig, config_from_dict, config_to_dict, load_config, save_config
from mesc3d_ros.contract import write_atomic
from mesc3d_training.checkpoint import save_model
from mesc3d_training.data import layout
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.feature_cache import CachedFeatures, build_cache
from mesc3d_training.losses import reconstruction_loss
from mesc3d_training.metrics import reconstruction_metrics
from mesc3d_training.model import build_model, check_model_config
from mesc3d_training.prompt_learning import PROMPTS_FILE, TABLE_FILE, ClassTable, learn_class_table
from mesc3d_training.schedule import WarmupCosine, step_scheduler
from mesc3d_training.train_checkpoint import (Progress, capture_rng, has_train_checkpoint, load_train_checkpoint,
                                              restore_rng, save_train_checkpoint)

log = logging.getLogger(__name__)

METRIC_KEYS = ('cd_l1', 'cd_l2', 'fscore_paper', 'fscore_1pct')
BEST_WEIGHTS_FILE = 'best_weights.safetensors'
MODEL_STEM = 'model'
EPOCH_FIELDS = ('epoch', 'global_step', 'lr', 'train_loss', *(f'val_{k}' for k in METRIC_KEYS), 'samples_per_s',
                'epoch_s')
STEP_FIELDS = ('global_step', 'epoch', 'loss', 'lr')


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training after a checkpoint was written; ``--resume`` continues."""

    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f'stopped by {signal.Signals(signum).name}; checkpoint {checkpoint}; continue with --resume')
        self.signum = signum


# ---- processes ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); else a 1-process run."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size == 1:
        return Distributed(0, 1, torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
    local_rank = int(os.environ['LOCAL_RANK'])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device('cuda', local_rank), 'nccl'
    else:
        device, backend = torch.device('cpu'), 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), world_size, device)


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so the step in flight finishes and is saved."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum

    def requested(self, ctx: Distributed) -> int:
        """The signal number when any rank was signalled (all ranks stop at the same step), else 0."""
        if ctx.world_size == 1:
            return self.signum
        flag = torch.tensor([self.signum], device=ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


# ---- data order --------------------------------------------------------------------------------------------------
class SeededItems(Dataset):
    """Each item is drawn under its own seed, key = (index, seed): augmentation no longer depends on which worker
    loads it (the dataset draws its randomness from torch's generator, ``data/sample.py``)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        with torch.random.fork_rng(devices=[]):   # leaves the caller's generator (dropout) untouched
            torch.manual_seed(seed)
            return self.dataset[index]


class EpochBatches(Sampler):
    """This rank's batches of (index, item seed): a permutation seeded by (seed, epoch), ``steps_per_epoch`` global
    batches of ``batch_size``, each split evenly over the ranks; ``set_epoch`` can start mid-epoch (resume)."""

    def __init__(self, num_items: int, batch_size: int, steps_per_epoch: int, seed: int, ctx: Distributed):
        if steps_per_epoch * batch_size > num_items:
            raise ValueError(f'{steps_per_epoch} steps of {batch_size} need {steps_per_epoch * batch_size} items, '
                             f'the split has {num_items}')
        self.num_items, self.batch_size, self.steps_per_epoch, self.seed = num_items, batch_size, steps_per_epoch, seed
        self.rank, self.per_rank = ctx.rank, batch_size // ctx.world_size
        self.epoch = self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self):
        order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])))
        for step in range(self.start_step, self.steps_per_epoch):
            # Seeds of the whole global batch, then this rank's share: any number of ranks sees the same samples.
            seeds = np.random.SeedSequence([self.seed, self.epoch, step]).generate_state(self.batch_size)
            mine = range(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
            yield [(int(order[step * self.batch_size + i]), int(seeds[i])) for i in mine]


# ---- logs --------------------------------------------------------------------------------------------------------
class CsvLog:
    """A CSV file appended row by row; a resumed run first drops the rows written after its checkpoint."""

    def __init__(self, path: Path, fields: tuple[str, ...], keep: Callable[[dict], bool] | None):
        rows = []
        if keep is not None and path.is_file():
            with open(path, newline='') as handle:
                rows = [row for row in csv.DictReader(handle) if keep(row)]
        self._handle = open(path, 'w', newline='')
        self._writer = csv.DictWriter(self._handle, fields)
        self._writer.writeheader()
        self._writer.writerows(rows)

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


# ---- stage (b): reconstruction -----------------------------------------------------------------------------------
class AfterTrunk(nn.Module):
    """``(trunk features, class embedding) -> points``: what the cached recipe trains of a model with ``from_trunk``
    (the trunk's parameters stay in ``model``, frozen, so checkpoints and the deployable file hold the whole model)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        return self.model.from_trunk(features, class_embedding)


def check_train_config(cfg: Config) -> None:
    """Raise ValueError for a config that cannot train, before any stage runs."""
    check_model_config(cfg.model)
    if cfg.train.feature_cache:
        if not cfg.model.image_weights:
            raise ValueError('train.feature_cache freezes the image trunk: it needs pretrained model.image_weights '
                             '(e.g. imagenet with image_backbone: mobilenet_v2)')
        if cfg.data.layout != 'generated':
            raise ValueError(f'train.feature_cache needs data.layout: generated, not {cfg.data.layout!r}')
        if cfg.train.cache_draws < 1:
            raise ValueError(f'train.cache_draws={cfg.train.cache_draws} must be >= 1')


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    best_val: dict
    """Validation metrics (METRIC_KEYS, means over samples) of the best epoch."""
    weights_path: Path
    """``best_weights.safetensors``: the bare module's state dict at the best epoch."""
    samples_per_s: float
    """Training throughput of this process's run (all ranks together, data loading included)."""
    wall_s: float


def fit(model: nn.Module, cfg: Config, run_dir: Path, table: ClassTable, resume: bool,
        ctx: Distributed) -> FitResult:
    """Train ``model`` (any module ``(image, class_embedding) -> points``) on the training split; returns the best
    validation epoch. Raises :class:`TrainingInterrupted` after checkpointing when SIGINT/SIGTERM arrives."""
    tc = cfg.train
    started = time.perf_counter()
    if tc.batch_size % ctx.world_size:
        raise ValueError(f'train.batch_size={tc.batch_size} is not divisible by the {ctx.world_size} processes')
    if tc.feature_cache:
        # The CPU-first recipe: the frozen trunk's features of every view and draw, built once (rank 0) and shared.
        encoder = model.image_encoder
        encoder.frozen_part.requires_grad_(False)
        if ctx.is_main:
            build_cache(cfg, encoder)
        if ctx.world_size > 1:
            dist.barrier()
        train_set = CachedFeatures(build_cache(cfg, encoder), cfg)
    else:
        train_set = ReconstructionDataset(cfg.data, 'train', cfg.model.image_size, train=True)
    val_set = ReconstructionDataset(cfg.data, 'val', cfg.model.image_size, train=False)
    if len(train_set) < tc.batch_size:
        raise ValueError(f'train.batch_size={tc.batch_size} exceeds the {len(train_set)} training items')
    steps_per_epoch = len(train_set) // tc.batch_size
    if tc.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, tc.max_steps_per_epoch)
    batches = EpochBatches(len(train_set), tc.batch_size, steps_per_epoch, tc.seed, ctx)
    # Own generators: creating a loader iterator draws a worker base seed, which from the global generator would
    # shift the dropout noise of a resumed run (it creates iterators at other points than an uninterrupted one).
    loader = DataLoader(SeededItems(train_set), batch_sampler=batches, num_workers=tc.num_workers,
                        persistent_workers=tc.num_workers > 0, pin_memory=ctx.device.type == 'cuda',
                        generator=torch.Generator().manual_seed(tc.seed))
    val_loader = DataLoader(Subset(val_set, validation_indices(len(val_set), tc)[ctx.rank::ctx.world_size]),
                            batch_size=batches.per_rank, num_workers=tc.num_workers,
                            persistent_workers=tc.num_workers > 0, pin_memory=ctx.device.type == 'cuda',
                            generator=torch.Generator().manual_seed(tc.seed))

    model.to(ctx.device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr, eps=tc.adam_eps)
    scheduler = step_scheduler(optimizer, WarmupCosine(tc.lr, tc.warmup_lr, tc.min_lr,
                                                       min(tc.warmup_epochs, tc.epochs), tc.epochs), steps_per_epoch)
    ckpt_dir = run_dir / 'checkpoints'
    progress = Progress(epoch=0, step_in_epoch=0, global_step=0, best_val=math.inf, best_epoch=0)
    if resume:
        progress, rng_states = load_train_checkpoint(ckpt_dir, model, optimizer, scheduler, cfg)
        if len(rng_states) == ctx.world_size:
            restore_rng(rng_states[ctx.rank])
        else:
            log.warning('checkpoint has RNG states of %d processes, this run has %d: dropout noise will differ',
                        len(rng_states), ctx.world_size)
        log.info('resuming at epoch %d, step %d of %d', progress.epoch + 1, progress.step_in_epoch, steps_per_epoch)
    elif has_train_checkpoint(ckpt_dir):
        raise FileExistsError(f'{ckpt_dir} already holds a training run: pass --resume, or choose another --out')
    trained = AfterTrunk(model) if tc.feature_cache else model
    network = DistributedDataParallel(trained) if ctx.world_size > 1 else trained
    amp = tc.amp and ctx.device.type == 'cuda'

    logs = writer = None
    if ctx.is_main:
        done = progress.global_step
        logs = (CsvLog(run_dir / 'epochs.csv', EPOCH_FIELDS, lambda r: int(r['epoch']) <= progress.epoch),
                CsvLog(run_dir / 'steps.csv', STEP_FIELDS, lambda r: int(r['global_step']) <= done))
        writer = SummaryWriter(str(run_dir / 'tb'), purge_step=progress.global_step + 1 if resume else None)
    throughput = []
    try:
        with StopSignals() as stop:
            for epoch in range(progress.epoch, tc.epochs):
                first_step = progress.step_in_epoch if epoch == progress.epoch else 0
                batches.set_epoch(epoch, first_step)
                network.train()
                epoch_started, losses = time.perf_counter(), []
                bar = tqdm(loader, total=len(batches), desc=f'epoch {epoch + 1}/{tc.epochs}', unit='batch',
                           disable=not ctx.is_main, mininterval=2.0)
                for step, batch in enumerate(bar, start=first_step + 1):
                    loss = train_step(network, batch, table, tc.loss, optimizer, ctx.device, amp)
                    scheduler.step()
                    losses.append(loss)
                    progress = Progress(epoch, step, progress.global_step + 1, progress.best_val, progress.best_epoch)
                    rate = len(losses) * tc.batch_size / (time.perf_counter() - epoch_started)
                    if ctx.is_main:
                        lr = scheduler.get_last_lr()[0]
                        bar.set_postfix(loss=f'{loss:.4f}', samples_s=f'{rate:.1f}')
                        logs[1].write({'global_step': progress.global_step, 'epoch': epoch + 1,
                                       'loss': f'{loss:.6f}', 'lr': f'{lr:.4g}'})
                        if progress.global_step % tc.log_every_steps == 0:
                            writer.add_scalar('train/loss', loss, progress.global_step)
                            writer.add_scalar('train/lr', lr, progress.global_step)
                            writer.add_scalar('train/samples_per_s', rate, progress.global_step)
                    signum = stop.requested(ctx)
                    if signum:
                        path = _checkpoint(ckpt_dir, model, optimizer, scheduler, progress, cfg, ctx)
                        raise TrainingInterrupted(signum, path)
                epoch_s = time.perf_counter() - epoch_started
                if losses:
                    throughput.append(len(losses) * tc.batch_size / epoch_s)
                # The bare module: a DDP forward broadcasts buffers, a collective that ranks holding different
                # numbers of validation batches would enter a different number of times.
                val = validate(model, val_loader, table, ctx, amp)
                best_val, best_epoch = progress.best_val, progress.best_epoch
                if val['cd_l1'] < best_val:
                    best_val, best_epoch = val['cd_l1'], epoch + 1
                    if ctx.is_main:
                        _save_best(run_dir / BEST_WEIGHTS_FILE, model, val, best_epoch)
                progress = Progress(epoch + 1, 0, progress.global_step, best_val, best_epoch)
                if ctx.is_main:
                    train_loss = float(np.mean(losses)) if losses else math.nan
                    logs[0].write({'epoch': epoch + 1, 'global_step': progress.global_step,
                                   'lr': f'{scheduler.get_last_lr()[0]:.4g}', 'train_loss': f'{train_loss:.6f}',
                                   **{f'val_{k}': f'{val[k]:.6f}' for k in METRIC_KEYS},
                                   'samples_per_s': f'{throughput[-1] if losses else math.nan:.2f}',
                                   'epoch_s': f'{epoch_s:.1f}'})
                    for key in METRIC_KEYS:
                        writer.add_scalar(f'val/{key}', val[key], progress.global_step)
                    log.info('epoch %d/%d: train loss %.4f, val CD-L1 %.4f (best %.4f at epoch %d), %.1f samples/s',
                             epoch + 1, tc.epochs, train_loss, val['cd_l1'], best_val, best_epoch,
                             throughput[-1] if losses else math.nan)
                _checkpoint(ckpt_dir, model, optimizer, scheduler, progress, cfg, ctx)
    finally:
        if ctx.is_main:
            for csv_log in logs:
                csv_log.close()
            writer.close()
    best_val, best_epoch = read_best(run_dir / BEST_WEIGHTS_FILE)
    return FitResult(best_epoch=best_epoch, best_val=best_val, weights_path=run_dir / BEST_WEIGHTS_FILE,
                     samples_per_s=float(np.mean(throughput)) if throughput else math.nan,
                     wall_s=time.perf_counter() - started)


def train_step(network: nn.Module, batch: dict, table: ClassTable, loss_kind: str,
               optimizer: torch.optim.Optimizer, device: torch.device, amp: bool) -> float:
    # (B, 3, S, S) RGB in [0, 1], or the cached recipe's trunk features (B, C, h, w)
    inputs = batch['features' if 'features' in batch else 'image'].to(device, non_blocking=True)
    gt = batch['points'].to(device, non_blocking=True)                     # (B, G, 3) unit ball, data frame
    embedding = table.embeddings_for(batch['category']).to(device)         # (B, D) frozen 3DSPL rows
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        pred = network(inputs, embedding)                                  # (B, N, 3)
    loss = reconstruction_loss(pred.float(), gt, loss_kind)                # nearest neighbours in float32
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def validation_indices(num_items: int, tc: TrainConfig) -> list[int]:
    """The whole validation split, or a fixed seeded subset of ``val_max_samples`` (the same every epoch)."""
    if not tc.val_max_samples or tc.val_max_samples >= num_items:
        return list(range(num_items))
    chosen = np.random.default_rng(tc.seed).choice(num_items, tc.val_max_samples, replace=False)
    return sorted(int(i) for i in chosen)


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, table: ClassTable, ctx: Distributed, amp: bool) -> dict:
    """Mean per-sample metrics over the validation items of all ranks (``model``: the bare module, not DDP)."""
    model.eval()
    sums = torch.zeros(1 + len(METRIC_KEYS), dtype=torch.float64, device=ctx.device)   # count, metric sums
    for batch in loader:
        embedding = table.embeddings_for(batch['category']).to(ctx.device)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(batch['image'].to(ctx.device), embedding)
        metrics = reconstruction_metrics(pred.float(), batch['points'].to(ctx.device))
        sums[0] += len(pred)
        for i, key in enumerate(METRIC_KEYS, start=1):
            sums[i] += metrics[key].sum()
    if ctx.world_size > 1:
        dist.all_reduce(sums)
    if sums[0] == 0:
        raise ValueError('the validation split is empty: nothing to choose the best epoch on')
    model.train()
    return {key: float(sums[i] / sums[0]) for i, key in enumerate(METRIC_KEYS, start=1)}


def _checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, progress: Progress, cfg: Config,
                ctx: Distributed) -> Path:
    """Every rank contributes its RNG state; rank 0 writes. Returns the checkpoint directory."""
    rng_states = [capture_rng()]
    if ctx.world_size > 1:
        rng_states = [None] * ctx.world_size
        dist.all_gather_object(rng_states, capture_rng())
    if ctx.is_main:
        save_train_checkpoint(ckpt_dir, model, optimizer, scheduler, progress, cfg, rng_states)
    if ctx.world_size > 1:
        dist.barrier()
    return ckpt_dir


def _save_best(path: Path, model: nn.Module, val: dict, epoch: int) -> None:
    tensors = {k: v.detach().to('cpu', copy=True).contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, save_safetensors_bytes(tensors, metadata={'val': json.dumps(val), 'epoch': str(epoch)}))


def read_best(path: Path) -> tuple[dict, int]:
    """(validation metrics, epoch) recorded with ``best_weights.safetensors``."""
    from safetensors import safe_open

    with safe_open(str(path), framework='pt') as handle:
        metadata = handle.metadata()
    return json.loads(metadata['val']), int(metadata['epoch'])


def load_best_weights(model: nn.Module, path: Path) -> nn.Module:
    model.load_state_dict(load_safetensors_bytes(Path(path).read_bytes()))
    return model


# ---- both stages -------------------------------------------------------------------------------------------------
def train(cfg: Config, out_dir: Path, resume: bool = False, table: ClassTable | None = None) -> Path:
    """Run stage (a) (unless ``table`` is given) and stage (b); returns the deployable ``model.yaml``.

    ``resume`` continues from ``out_dir``'s checkpoint (and reuses its class table). Under torchrun every rank calls
    this; rank 0 alone runs stage (a) and writes files.
    """
    check_train_config(cfg)
    ctx = init_distributed()
    out_dir = Path(out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / 'config.yaml')
    table = table or class_table_for(cfg, out_dir, resume, ctx)
    torch.manual_seed(cfg.train.seed)   # identical initial weights on every rank
    model = build_model(cfg.model)
    result = fit(model, cfg, out_dir, table, resume, ctx)
    model_yaml = out_dir / f'{MODEL_STEM}.yaml'
    if ctx.is_main:
        load_best_weights(model.cpu(), result.weights_path)
        metrics = {'val': {k: round(v, 6) for k, v in result.best_val.items()}, 'best_epoch': result.best_epoch,
                   'prompt_stage': table.metrics, 'train_samples_per_s': round(result.samples_per_s, 2),
                   'processes': ctx.world_size, 'device': ctx.device.type}
        # The trained 3DSPL prompts travel with the model so `mesc3d export --extra-classes` can embed new names
        # exactly as the table was embedded (absent when the class table came from another run).
        prompts_file = out_dir / PROMPTS_FILE
        prompts = load_safetensors_bytes(prompts_file.read_bytes()) if prompts_file.is_file() else None
        save_model(out_dir / MODEL_STEM, model, cfg, table.classes, table.generic, data_manifest_hash(cfg), metrics,
                   prompts=prompts)
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


def data_manifest_hash(cfg: Config) -> str:
    """The generated dataset's manifest hash; empty for layouts without a manifest (ShapeNet, Pix3D)."""
    if cfg.data.layout == 'generated':
        return layout.read_manifest(Path(cfg.data.root))['manifest_hash']
    return ''


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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config file and the overrides that ``train`` and ``baselines`` share."""
    parser.add_argument('config', type=Path, help='config YAML, e.g. config/mesc3d_small.yaml')
    parser.add_argument('--epochs', type=int, help='override train.epochs')
    parser.add_argument('--batch-size', type=int, help='override train.batch_size')
    parser.add_argument('--max-steps-per-epoch', type=int, help='override train.max_steps_per_epoch')
    parser.add_argument('--data-root', help='override data.root')
    parser.add_argument('--set', action='append', default=[], metavar='SECTION.KEY=VALUE',
                        help='override any config value (YAML syntax), e.g. --set train.lr=3e-4; repeatable')


def config_from_arguments(args: argparse.Namespace) -> Config:
    overrides = list(args.set)
    for flag, key in (('epochs', 'train.epochs'), ('batch_size', 'train.batch_size'),
                      ('max_steps_per_epoch', 'train.max_steps_per_epoch'), ('data_root', 'data.root')):
        if getattr(args, flag) is not None:
            overrides.append(f'{key}={getattr(args, flag)}')
    return apply_overrides(load_config(args.config), overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d train', description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument('--out', type=Path, help='run directory (default runs/<model name>)')
    parser.add_argument('--resume', action='store_true', help='continue the run in --out from its last checkpoint')
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    out = args.out or Path('runs') / cfg.model.name
    try:
        train(cfg, out, resume=args.resume)
    except TrainingInterrupted as exc:
        log.warning('%s', exc)
        return 128 + exc.signum
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
