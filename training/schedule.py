"""
Learning-rate schedule of both training stages: linear warm-up, then cosine decay (method.md §5).

Upstream uses timm's cosine scheduler stepped once per epoch with "warmup not prefixed": during warm-up the rate
rises linearly from ``warmup_lr`` to ``base_lr``; afterwards it follows the cosine over the *whole* run, counted from
epoch 0, so the cosine has already decayed a little when warm-up ends. We keep that curve but evaluate it at
fractional epochs (once per optimiser step): with the short CPU budgets we train, a per-epoch staircase would spend
whole epochs at one rate and warm-up would be a handful of jumps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """lr(epoch) for a fractional epoch in [0, total_epochs]."""

    base_lr: float
    warmup_lr: float
    min_lr: float
    warmup_epochs: float
    total_epochs: float

    def __post_init__(self) -> None:
        if self.total_epochs <= 0:
            raise ValueError(f'total_epochs must be > 0, got {self.total_epochs}')
        if not 0 <= self.warmup_epochs <= self.total_epochs:
            raise ValueError(f'warmup_epochs={self.warmup_epochs} must lie in [0, total_epochs={self.total_epochs}]')
        if self.base_lr <= 0 or self.warmup_lr < 0 or self.min_lr < 0:
            raise ValueError(f'learning rates must be positive: base {self.base_lr}, warm-up {self.warmup_lr}, '
                             f'min {self.min_lr}')

    def lr(self, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return self.warmup_lr + epoch * (self.base_lr - self.warmup_lr) / self.warmup_epochs
        progress = min(epoch / self.total_epochs, 1.0)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))


def step_scheduler(optimizer: torch.optim.Optimizer, schedule: WarmupCosine,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """
    Return a LambdaLR, stepped once per optimiser step, following ``schedule`` at step / steps_per_epoch.

    The optimiser's lr must equal ``schedule.base_lr`` (LambdaLR multiplies it). Its ``state_dict`` holds the step
    count, so a resumed run continues the curve exactly.
    """
    if steps_per_epoch < 1:
        raise ValueError(f'steps_per_epoch must be >= 1, got {steps_per_epoch}')
    for group in optimizer.param_groups:
        if not math.isclose(group['lr'], schedule.base_lr):
            raise ValueError(f'optimizer lr {group["lr"]} differs from the schedule base_lr {schedule.base_lr}')
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule.lr(step / steps_per_epoch) / schedule.base_lr)
