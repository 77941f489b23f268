"""
The training run's logs behind one object: ``epochs.csv``, ``steps.csv`` and TensorBoard (``tb/``).

Only rank 0 holds a :class:`RunLog`. A resumed run first drops the rows written after its checkpoint, so the logs of
an interrupted and resumed run read like those of an uninterrupted one.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from mesc3d_training.metrics import METRIC_KEYS
from mesc3d_training.train_checkpoint import Progress

EPOCH_FIELDS = ('epoch', 'global_step', 'lr', 'train_loss', *(f'val_{k}' for k in METRIC_KEYS), 'samples_per_s',
                'epoch_s')
STEP_FIELDS = ('global_step', 'epoch', 'loss', 'lr')


class CsvLog:
    """A CSV file appended row by row, keeping the existing rows that ``keep`` accepts."""

    def __init__(self, path: Path, fields: tuple[str, ...], keep: Callable[[dict], bool]):
        rows = []
        if path.is_file():
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


class RunLog:
    """Per-step and per-epoch records of one run in ``run_dir``, continuing after ``progress`` (a fresh run: 0)."""

    def __init__(self, run_dir: Path, progress: Progress):
        self._epochs = CsvLog(run_dir / 'epochs.csv', EPOCH_FIELDS, lambda r: int(r['epoch']) <= progress.epoch)
        self._steps = CsvLog(run_dir / 'steps.csv', STEP_FIELDS,
                             lambda r: int(r['global_step']) <= progress.global_step)
        self._tb = SummaryWriter(str(run_dir / 'tb'), purge_step=progress.global_step + 1)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self._epochs.close()
        self._steps.close()
        self._tb.close()

    def step(self, global_step: int, epoch: int, loss: float, lr: float, samples_per_s: float) -> None:
        """Record a logged step: its loss and the rate it was taken with; ``global_step`` and ``epoch`` 1-based."""
        self._steps.write({'global_step': global_step, 'epoch': epoch, 'loss': f'{loss:.6f}', 'lr': f'{lr:.9g}'})
        self._tb.add_scalar('train/loss', loss, global_step)
        self._tb.add_scalar('train/lr', lr, global_step)
        self._tb.add_scalar('train/samples_per_s', samples_per_s, global_step)

    def epoch(self, epoch: int, global_step: int, lr: float, train_loss: float, val: dict, samples_per_s: float,
              epoch_s: float) -> None:
        """Record a finished epoch, 1-based: mean training loss, validation metrics (METRIC_KEYS), throughput."""
        self._epochs.write({'epoch': epoch, 'global_step': global_step, 'lr': f'{lr:.9g}',
                            'train_loss': f'{train_loss:.6f}', **{f'val_{k}': f'{val[k]:.6f}' for k in METRIC_KEYS},
                            'samples_per_s': f'{samples_per_s:.2f}', 'epoch_s': f'{epoch_s:.1f}'})
        for key in METRIC_KEYS:
            self._tb.add_scalar(f'val/{key}', val[key], global_step)
