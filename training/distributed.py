"""
Where this training process runs: its rank among torchrun's processes, its device, and stop signals.

One process (the default) or ``torchrun --nproc_per_node G``: DDP with NCCL on CUDA, gloo on CPU. SIGINT/SIGTERM
become a flag that every rank agrees on between steps, so the step in flight finishes and is checkpointed.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Literal

import torch
from torch import distributed as dist

DeviceChoice = Literal['auto', 'cuda', 'cpu']
DEVICE_CHOICES: tuple[DeviceChoice, ...] = ('auto', 'cuda', 'cpu')


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: DeviceChoice = 'auto') -> Distributed:
    """
    Join the torchrun process group when WORLD_SIZE > 1, else make a 1-process run, on ``device``.

    ``auto``: CUDA when available. Raises RuntimeError when ``cuda`` is asked for and there is none.
    """
    if device not in DEVICE_CHOICES:
        raise ValueError(f'device {device!r}: choose one of {list(DEVICE_CHOICES)}')
    use_cuda = torch.cuda.is_available() if device == 'auto' else device == 'cuda'
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError('--device cuda: torch sees no CUDA device on this machine')
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size == 1:
        return Distributed(0, 1, torch.device('cuda' if use_cuda else 'cpu'))
    local_rank = int(os.environ['LOCAL_RANK'])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen, backend = torch.device('cuda', local_rank), 'nccl'
    else:
        chosen, backend = torch.device('cpu'), 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), world_size, chosen)


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
        """Return the signal number when any rank was signalled (all ranks stop at the same step), else 0."""
        if ctx.world_size == 1:
            return self.signum
        flag = torch.tensor([self.signum], device=ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
