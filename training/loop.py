"""
The one training loop of stage (b), reconstruction: every model this project ships or compares is trained here.

:func:`fit` trains any module ``(image, class_embedding) -> points`` (MESC-3D, the PSGN-style baseline) on a
config's training set (``train_data.py``: images, cached trunk features or a crop pack) on one device or under
torchrun. A :class:`Trainer` is a few named steps, as nerfstudio's: :meth:`~Trainer.train_iteration` (one optimiser
step), :meth:`~Trainer.evaluate` (validation CD-L1 and F-scores), :meth:`~Trainer.save_checkpoint` (resumable
state, ``train_checkpoint.py``) and :meth:`~Trainer.save_best` (the best validation epoch so far, in the deployable
format of ``checkpoint.py``). The loss stays on the device between log intervals (``train.log_every_steps``):
reading it back every step would stall a GPU.

CD-L1 (``train.loss``), Adam, warm-up + cosine per step (``schedule.py``), validation every epoch, the best epoch
chosen on the **validation** split's CD-L1.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from mesc3d_ros.config import Config
from mesc3d_training.checkpoint import read_metrics, save_model
from mesc3d_training.distributed import Distributed, StopSignals
from mesc3d_training.losses import reconstruction_loss
from mesc3d_training.metrics import METRIC_KEYS, reconstruction_metrics
from mesc3d_training.prompt_learning import ClassTable
from mesc3d_training.run_log import RunLog
from mesc3d_training.schedule import WarmupCosine, step_scheduler
from mesc3d_training.train_checkpoint import (Progress, capture_rng, has_train_checkpoint, load_train_checkpoint,
                                              restore_rng, save_train_checkpoint)
from mesc3d_training.train_data import (EpochBatches, SeededItems, training_manifest_hash, training_set,
                                        validation_indices, validation_set)

log = logging.getLogger(__name__)

BEST_STEM = 'best'
"""``<run>/best.{safetensors,yaml}``: the weights of the best validation epoch so far (``checkpoint.save_model``)."""
CHECKPOINT_DIR = 'checkpoints'


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training after a checkpoint was written; ``--resume`` continues."""

    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f'stopped by {signal.Signals(signum).name}; checkpoint {checkpoint}; continue with --resume')
        self.signum = signum


class AfterTrunk(nn.Module):
    """
    Map ``(trunk features, class embedding) -> points``: what the cached recipe trains of a model.

    The trunk's parameters stay in ``model``, frozen, so checkpoints and the deployable file hold the whole model.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        return self.model.from_trunk(features, class_embedding)


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    best_val: dict
    """Validation metrics (METRIC_KEYS, means over samples) of the best epoch."""
    best_stem: Path
    """``<run>/best``: the bare module's weights at the best epoch (``checkpoint.load_weights`` reads them)."""
    samples_per_s: float
    """Training throughput of this process's run (all ranks together, data loading included)."""


@dataclass(frozen=True)
class EpochStats:
    train_loss: float
    """Mean loss over the epoch's steps taken by this run (NaN when it resumed at the epoch's end)."""
    samples_per_s: float
    seconds: float


class Trainer:
    """One reconstruction run of ``model`` in ``run_dir``: data, optimiser, schedule, resume, logs."""

    def __init__(self, model: nn.Module, cfg: Config, run_dir: Path, table: ClassTable, resume: bool,
                 ctx: Distributed):
        tc = cfg.train
        if tc.batch_size % ctx.world_size:
            raise ValueError(f'train.batch_size={tc.batch_size} is not divisible by the {ctx.world_size} processes')
        self.model, self.cfg, self.run_dir, self.table, self.ctx = model, cfg, run_dir, table, ctx
        self.ckpt_dir = run_dir / CHECKPOINT_DIR
        train_set, val_set = training_set(cfg, model, ctx), validation_set(cfg)
        if len(train_set) < tc.batch_size:
            raise ValueError(f'train.batch_size={tc.batch_size} exceeds the {len(train_set)} training items')
        steps_per_epoch = len(train_set) // tc.batch_size
        if tc.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, tc.max_steps_per_epoch)
        self.batches = EpochBatches(len(train_set), tc.batch_size, steps_per_epoch, tc.seed, ctx)
        # Own generators: creating a loader iterator draws a worker base seed, which from the global generator would
        # shift the dropout noise of a resumed run (it creates iterators at other points than an uninterrupted one).
        pin = ctx.device.type == 'cuda'
        self.loader = DataLoader(SeededItems(train_set), batch_sampler=self.batches, num_workers=tc.num_workers,
                                 persistent_workers=tc.num_workers > 0, pin_memory=pin,
                                 generator=torch.Generator().manual_seed(tc.seed))
        self.val_loader = DataLoader(Subset(val_set, validation_indices(len(val_set), tc)[ctx.rank::ctx.world_size]),
                                     batch_size=self.batches.per_rank, num_workers=tc.num_workers,
                                     persistent_workers=tc.num_workers > 0, pin_memory=pin,
                                     generator=torch.Generator().manual_seed(tc.seed))
        model.to(ctx.device)
        self.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr,
                                          eps=tc.adam_eps)
        self.scheduler = step_scheduler(self.optimizer, WarmupCosine(tc.lr, tc.warmup_lr, tc.min_lr,
                                                                     min(tc.warmup_epochs, tc.epochs), tc.epochs),
                                        steps_per_epoch)
        self.progress = self._start(resume)
        trained = AfterTrunk(model) if tc.feature_cache else model
        self.network = DistributedDataParallel(trained) if ctx.world_size > 1 else trained
        self.amp = tc.amp and ctx.device.type == 'cuda'
        self.manifest_hash = training_manifest_hash(cfg)

    def _start(self, resume: bool) -> Progress:
        """Progress of a fresh run, or the checkpoint's (model, optimiser, schedule and RNG restored)."""
        if not resume:
            if has_train_checkpoint(self.ckpt_dir):
                raise FileExistsError(f'{self.ckpt_dir} already holds a training run: pass --resume, or choose '
                                      'another --out')
            return Progress(epoch=0, step_in_epoch=0, global_step=0, best_val=math.inf, best_epoch=0)
        progress, rng_states = load_train_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler,
                                                     self.cfg)
        if len(rng_states) == self.ctx.world_size:
            restore_rng(rng_states[self.ctx.rank])
        else:
            log.warning('checkpoint has RNG states of %d processes, this run has %d: dropout noise will differ',
                        len(rng_states), self.ctx.world_size)
        log.info('resuming at epoch %d, step %d of %d', progress.epoch + 1, progress.step_in_epoch,
                 self.batches.steps_per_epoch)
        return progress

    def fit(self) -> FitResult:
        """Train the remaining epochs; raises :class:`TrainingInterrupted` after checkpointing on SIGINT/SIGTERM."""
        throughput = []
        with (RunLog(self.run_dir, self.progress) if self.ctx.is_main else nullcontext()) as run_log, \
                StopSignals() as stop:
            for epoch in range(self.progress.epoch, self.cfg.train.epochs):
                stats = self.train_epoch(epoch, stop, run_log)
                if not math.isnan(stats.train_loss):
                    throughput.append(stats.samples_per_s)
                val = self.evaluate()
                self.finish_epoch(epoch, val, stats, run_log)
                self.save_checkpoint()
        best_stem = self.run_dir / BEST_STEM
        metrics = read_metrics(best_stem)
        return FitResult(best_epoch=metrics['best_epoch'], best_val=metrics['val'], best_stem=best_stem,
                         samples_per_s=sum(throughput) / len(throughput) if throughput else math.nan)

    def train_epoch(self, epoch: int, stop: StopSignals, run_log: RunLog | None) -> EpochStats:
        """Take the epoch's remaining steps (all of them, or those after a resumed checkpoint)."""
        tc, first_step = self.cfg.train, self.progress.step_in_epoch if epoch == self.progress.epoch else 0
        self.batches.set_epoch(epoch, first_step)
        self.network.train()
        started, steps = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=self.ctx.device)          # summed on the device, read once per epoch
        bar = tqdm(self.loader, total=len(self.batches), desc=f'epoch {epoch + 1}/{tc.epochs}', unit='batch',
                   disable=not self.ctx.is_main, mininterval=2.0)
        for step, batch in enumerate(bar, start=first_step + 1):
            lr = self.scheduler.get_last_lr()[0]                    # the rate this step is taken with
            loss = self.train_iteration(batch)
            loss_sum += loss
            steps += 1
            p = self.progress
            self.progress = Progress(epoch, step, p.global_step + 1, p.best_val, p.best_epoch)
            if run_log is not None and self.progress.global_step % tc.log_every_steps == 0:
                rate = steps * tc.batch_size / (time.perf_counter() - started)
                value = loss.item()
                bar.set_postfix(loss=f'{value:.4f}', samples_s=f'{rate:.1f}')
                run_log.step(self.progress.global_step, epoch + 1, value, lr, rate)
            signum = stop.requested(self.ctx)
            if signum:
                raise TrainingInterrupted(signum, self.save_checkpoint())
        seconds = time.perf_counter() - started
        if not steps:
            return EpochStats(math.nan, math.nan, seconds)
        return EpochStats(float(loss_sum.item()) / steps, steps * tc.batch_size / seconds, seconds)

    def train_iteration(self, batch: dict) -> torch.Tensor:
        """One optimiser step and schedule step; returns the batch loss, detached, on the device."""
        device = self.ctx.device
        # (B, 3, S, S) RGB in [0, 1], or the cached recipe's trunk features (B, C, h, w)
        inputs = batch['features' if 'features' in batch else 'image'].to(device, non_blocking=True)
        gt = batch['points'].to(device, non_blocking=True)                     # (B, G, 3) unit ball, output frame
        embedding = self.table.embeddings_for(batch['category']).to(device)    # (B, D) frozen 3DSPL rows
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
            pred = self.network(inputs, embedding)                             # (B, N, 3)
        loss = reconstruction_loss(pred.float(), gt, self.cfg.train.loss)     # nearest neighbours in float32
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def evaluate(self) -> dict:
        """Mean per-sample validation metrics over all ranks (METRIC_KEYS)."""
        # The bare module: a DDP forward broadcasts buffers, a collective that ranks holding different numbers of
        # validation batches would enter a different number of times.
        return validate(self.model, self.val_loader, self.table, self.ctx, self.amp)

    def finish_epoch(self, epoch: int, val: dict, stats: EpochStats, run_log: RunLog | None) -> None:
        """Keep the epoch's weights when its validation CD-L1 is the best so far; log the epoch."""
        p = self.progress
        best_val, best_epoch = p.best_val, p.best_epoch
        if val['cd_l1'] < best_val:
            best_val, best_epoch = val['cd_l1'], epoch + 1
            if self.ctx.is_main:
                self.save_best(val, best_epoch)
        self.progress = Progress(epoch + 1, 0, p.global_step, best_val, best_epoch)
        if run_log is not None:
            run_log.epoch(epoch + 1, p.global_step, self.scheduler.get_last_lr()[0], stats.train_loss, val,
                          stats.samples_per_s, stats.seconds)
            log.info('epoch %d/%d: train loss %.4f, val CD-L1 %.4f (best %.4f at epoch %d), %.1f samples/s',
                     epoch + 1, self.cfg.train.epochs, stats.train_loss, val['cd_l1'], best_val, best_epoch,
                     stats.samples_per_s)

    def save_best(self, val: dict, epoch: int) -> Path:
        """``<run>/best``: this epoch's weights in the deployable format, its validation metrics recorded."""
        return save_model(self.run_dir / BEST_STEM, self.model, self.cfg, self.table.classes, self.table.generic,
                          self.manifest_hash, {'val': val, 'best_epoch': epoch})

    def save_checkpoint(self) -> Path:
        """Every rank contributes its RNG state; rank 0 writes. Returns the checkpoint directory."""
        rng_states = [capture_rng()]
        if self.ctx.world_size > 1:
            rng_states = [None] * self.ctx.world_size
            dist.all_gather_object(rng_states, capture_rng())
        if self.ctx.is_main:
            save_train_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler, self.progress, self.cfg,
                                  rng_states)
        if self.ctx.world_size > 1:
            dist.barrier()
        return self.ckpt_dir


def fit(model: nn.Module, cfg: Config, run_dir: Path, table: ClassTable, resume: bool,
        ctx: Distributed) -> FitResult:
    """Train ``model`` on the training split of ``cfg``; returns the best validation epoch (see :class:`Trainer`)."""
    return Trainer(model, cfg, run_dir, table, resume, ctx).fit()


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, table: ClassTable, ctx: Distributed, amp: bool) -> dict:
    """Mean per-sample metrics over the validation items of all ranks (``model``: the bare module, not DDP)."""
    was_training = model.training
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
    model.train(was_training)
    return {key: float(sums[i] / sums[0]) for i, key in enumerate(METRIC_KEYS, start=1)}
