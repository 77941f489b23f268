"""
Resumable training checkpoints: weights, optimiser, schedule, RNG and progress, written atomically.

This is the *training* state (``loop.py`` writes one every epoch and on SIGINT/SIGTERM); the deployable model is
``checkpoint.py``'s format. One checkpoint is a pair of files named after the global step, then a pointer::

    <dir>/step_00001234.safetensors   model state dict (``checkpoint.weights_bytes``, the one weights format)
    <dir>/step_00001234.pt            optimiser, LR scheduler, per-rank RNG states, progress, config,
                                      sha256 of the weights; tensors and primitives only (``weights_only=True``)
    <dir>/latest.json                 {"weights": ..., "state": ...}: replaced last, by rename

Each file is written to a temporary name and renamed, and the pointer moves only once both files are complete, so a
crash at any moment leaves the previous checkpoint readable. The two newest pairs are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mesc3d_ros.config import Config, config_hash, config_to_dict
from mesc3d_ros.contract import write_atomic
from mesc3d_training.checkpoint import read_verified_safetensors, weights_bytes

LATEST_FILE = 'latest.json'
KEEP_CHECKPOINTS = 2


class TrainCheckpointError(ValueError):
    """A training checkpoint is missing, corrupt or belongs to another config/model; the message names the file."""


@dataclass(frozen=True)
class Progress:
    """Where training stands; a resumed run continues at (``epoch``, ``step_in_epoch``)."""

    epoch: int
    """Epoch in progress (0-based); equals the number of finished epochs when ``step_in_epoch`` is 0."""
    step_in_epoch: int
    """Optimiser steps already taken in ``epoch``."""
    global_step: int
    best_val: float
    """Best validation CD-L1 so far (inf before the first validation)."""
    best_epoch: int
    """Epoch (1-based count of finished epochs) that gave ``best_val``; 0 = none yet."""


def capture_rng() -> dict:
    """Return this process's RNG states (torch CPU/CUDA, numpy global, python) as tensors and primitives."""
    np_state = np.random.get_state(legacy=False)
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'numpy_key': torch.from_numpy(np_state['state']['key'].astype(np.int64)),
        'numpy_pos': int(np_state['state']['pos']),
        'numpy_has_gauss': int(np_state['has_gauss']),
        'numpy_gauss': float(np_state['gauss']),
        'python': _python_state_to_primitives(random.getstate()),
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    np.random.set_state({'bit_generator': 'MT19937',
                         'state': {'key': state['numpy_key'].numpy().astype(np.uint32), 'pos': state['numpy_pos']},
                         'has_gauss': state['numpy_has_gauss'], 'gauss': state['numpy_gauss']})
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))


def _python_state_to_primitives(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def save_train_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                          scheduler: torch.optim.lr_scheduler.LRScheduler, progress: Progress, cfg: Config,
                          rng_states: list[dict]) -> Path:
    """
    Write the pair for ``progress.global_step``, move the pointer, drop older pairs; returns the state path.

    ``model`` is the bare module (not the DDP wrapper); ``rng_states`` holds one :func:`capture_rng` per rank.
    """
    ckpt_dir = Path(ckpt_dir)
    stem = f'step_{progress.global_step:08d}'
    blob = weights_bytes(model.state_dict(), cfg)
    state = {
        'config': config_to_dict(cfg),
        'config_hash': config_hash(cfg),
        'weights_sha256': hashlib.sha256(blob).hexdigest(),
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict(),
        'progress': dataclasses.asdict(progress),
        'rng': rng_states,
    }
    write_atomic(ckpt_dir / f'{stem}.safetensors', blob)
    state_path = ckpt_dir / f'{stem}.pt'
    tmp = state_path.with_name(f'.{state_path.name}.tmp')
    torch.save(state, tmp)
    tmp.replace(state_path)
    write_atomic(ckpt_dir / LATEST_FILE,
                 json.dumps({'weights': f'{stem}.safetensors', 'state': f'{stem}.pt'}).encode())
    stems = sorted(path.stem for path in ckpt_dir.glob('step_*.pt'))
    for old in stems[:-KEEP_CHECKPOINTS]:
        for suffix in ('.safetensors', '.pt'):
            (ckpt_dir / f'{old}{suffix}').unlink(missing_ok=True)
    return state_path


def has_train_checkpoint(ckpt_dir: Path) -> bool:
    return (Path(ckpt_dir) / LATEST_FILE).is_file()


def load_train_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                          scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: Config) -> tuple[Progress, list[dict]]:
    """
    Load the latest pair into the given objects; returns (progress, per-rank RNG states).

    Raises :class:`TrainCheckpointError` when there is no checkpoint, a file is corrupt or truncated, the config
    differs from ``cfg`` (the differing keys are named) or the weights do not fit ``model``.
    """
    ckpt_dir = Path(ckpt_dir)
    pointer_path = ckpt_dir / LATEST_FILE
    try:
        pointer = json.loads(pointer_path.read_text())
        weights_path, state_path = ckpt_dir / pointer['weights'], ckpt_dir / pointer['state']
    except FileNotFoundError as exc:
        raise TrainCheckpointError(f'{pointer_path}: no training checkpoint to resume from') from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainCheckpointError(f'{pointer_path}: unreadable checkpoint pointer: {exc!r}') from exc
    try:
        state = torch.load(state_path, map_location='cpu', weights_only=True)
    except Exception as exc:   # torch.load raises many types (RuntimeError, EOFError, UnpicklingError, …)
        raise TrainCheckpointError(f'{state_path}: corrupt or truncated training state: {exc!r}') from exc
    if not isinstance(state, dict) or 'config_hash' not in state:
        raise TrainCheckpointError(f'{state_path}: not a training state written by loop.py')
    if state['config_hash'] != config_hash(cfg):
        raise TrainCheckpointError(f'{state_path}: written for another config; differing keys: '
                                   f'{config_differences(state["config"], config_to_dict(cfg))}')
    weights = read_verified_safetensors(weights_path, state['weights_sha256'], state_path, TrainCheckpointError)
    try:
        model.load_state_dict(weights)
        optimizer.load_state_dict(state['optimizer'])
    except (RuntimeError, ValueError) as exc:
        raise TrainCheckpointError(f'{weights_path}: does not fit the model being trained: {exc}') from exc
    scheduler.load_state_dict(state['scheduler'])
    return Progress(**state['progress']), state['rng']


def config_differences(saved: dict, current: dict, prefix: str = '') -> list[str]:
    """Dotted keys whose values differ between two config mappings, e.g. ``['train.lr']``."""
    keys = sorted(set(saved) | set(current))
    differences = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f'{prefix}{key}.')
        elif a != b:
            differences.append(f'{prefix}{key}: {a!r} -> {b!r}')
    return differences
