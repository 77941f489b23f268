"""
Training: both stages end to end, logs, resume after a real SIGINT, checkpoint errors, 2-process gloo DDP.

Everything runs on a tiny dataset rendered by the real generator and a tiny config (``train_fixtures.py``).
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mesc3d_ros.config import ConfigError, save_config
from mesc3d_training.checkpoint import load_model
from mesc3d_training.distributed import Distributed
from mesc3d_training.model import build_model
from mesc3d_training.prompt_learning import GENERIC_CLASS
from mesc3d_training.schedule import WarmupCosine, step_scheduler
from mesc3d_training.train import main, train
from mesc3d_training.train_checkpoint import TrainCheckpointError, load_train_checkpoint
from mesc3d_training.train_data import EpochBatches
from train_fixtures import HELD_OUT, make_tiny_dataset, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp('tiny_data'))


@pytest.fixture(scope='module')
def finished_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train an uninterrupted run of 3 epochs × 2 steps (the reference for the resume test)."""
    run = tmp_path_factory.mktemp('run')
    train(tiny_config(data_root, epochs=3), run)
    return run


def read_steps(run: Path) -> list[tuple[int, float]]:
    """Return the (global_step, loss) rows written so far (a header or row still being written is not one yet)."""
    with open(run / 'steps.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    return [(int(row['global_step']), float(row['loss'])) for row in rows if row.get('global_step') and row.get('loss')]


def subprocess_env() -> dict:
    # The same thread count as this process, so the subprocess's float reductions match in-process runs.
    return dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), HF_HUB_OFFLINE='1')


def test_both_stages_write_a_deployable_model_and_logs(finished_run: Path):
    loaded = load_model(finished_run / 'model.yaml')
    names = [entry.name for entry in loaded.classes]
    assert names[-1] == HELD_OUT and HELD_OUT not in names[:-1], 'zero-shot classes follow the training classes'
    assert loaded.generic_class.name == GENERIC_CLASS
    assert all(math.isclose(sum(v * v for v in e.embedding), 1.0, rel_tol=1e-4) for e in loaded.classes)
    assert all(e.size_m > 0 for e in loaded.classes)
    assert 1 <= loaded.metrics['best_epoch'] <= 3 and loaded.metrics['val']['cd_l1'] > 0
    assert loaded.metrics['prompt_stage']['epoch'] in (1, 2)
    assert loaded.prompts, 'the trained 3DSPL prompts travel with the model (for export --extra-classes)'
    steps = read_steps(finished_run)
    assert [s for s, _ in steps] == list(range(1, 7)) and all(loss > 0 for _, loss in steps)
    with open(finished_run / 'epochs.csv', newline='') as handle:
        epochs = list(csv.DictReader(handle))
    assert [(row['epoch'], row['global_step']) for row in epochs] == [('1', '2'), ('2', '4'), ('3', '6')]
    assert all(float(row['samples_per_s']) > 0 for row in epochs)
    # The epoch's training loss (summed on the device) is the mean of its logged step losses.
    for row in epochs:
        done = int(row['global_step'])
        assert float(row['train_loss']) == pytest.approx(sum(loss for _, loss in steps[done - 2:done]) / 2, abs=2e-6)
    # One log object: TensorBoard holds the numbers the CSV files hold.
    events = EventAccumulator(str(finished_run / 'tb'))
    events.Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars('train/loss')] == \
        [(step, pytest.approx(loss, abs=2e-6)) for step, loss in steps]
    assert [(e.step, e.value) for e in events.Scalars('val/cd_l1')] == \
        [(int(row['global_step']), pytest.approx(float(row['val_cd_l1']), abs=2e-6)) for row in epochs]
    assert (finished_run / 'prompt_log.csv').read_text().count('\n') == 3   # header + 2 epochs
    # The best epoch's weights are what was saved as the deployable model.
    best = min(epochs, key=lambda row: float(row['val_cd_l1']))
    assert loaded.metrics['best_epoch'] == int(best['epoch'])
    assert loaded.metrics['val']['cd_l1'] == pytest.approx(float(best['val_cd_l1']), abs=2e-6)
    best_weights = load_model(finished_run / 'best.yaml').model.state_dict()
    assert all(torch.equal(value, best_weights[key]) for key, value in loaded.model.state_dict().items())


def test_a_bad_model_config_fails_at_load_before_any_stage(tmp_path: Path):
    config = tmp_path / 'bad.yaml'
    config.write_text('model: {name: bad, token_dim: 30, mit_heads: 8}\n')
    with pytest.raises(ConfigError, match=r'bad\.yaml\.model: .*token_dim=30 is not divisible by mit_heads=8'):
        main([str(config), '--out', str(tmp_path / 'run')])
    assert not (tmp_path / 'run').exists(), 'nothing ran'


def test_resume_after_sigint_repeats_the_uninterrupted_run(data_root: Path, finished_run: Path, tmp_path: Path):
    cfg = tiny_config(data_root, epochs=3)
    config_path = save_config(cfg, tmp_path / 'tiny.yaml')
    run = tmp_path / 'run'
    process = subprocess.Popen([sys.executable, '-m', 'mesc3d_training.cli', 'train', str(config_path), '--out',
                                str(run)], env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / 'steps.csv').is_file() and len(read_steps(run)) >= 1):
            assert process.poll() is None, 'training ended before it could be interrupted'
            assert time.monotonic() < deadline, 'no training step within 120 s'
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGINT, stderr[-2000:]
    assert 'continue with --resume' in stderr
    interrupted_at = len(read_steps(run))
    assert interrupted_at < 6, 'the signal arrived after the last step: nothing left to resume'

    train(cfg, run, resume=True)
    reference = read_steps(finished_run)
    resumed = read_steps(run)
    assert [s for s, _ in resumed] == [s for s, _ in reference]
    # The first resumed step is the one that matters most; every later one must match as well.
    for (step, loss), (_, expected) in zip(resumed, reference):
        assert loss == pytest.approx(expected, rel=1e-5, abs=1e-7), f'step {step} (interrupted after {interrupted_at})'
    assert load_model(run / 'model.yaml').metrics['best_epoch'] == load_model(
        finished_run / 'model.yaml').metrics['best_epoch']


def test_resume_refuses_corrupt_or_mismatched_checkpoints(data_root: Path, finished_run: Path, tmp_path: Path):
    cfg = tiny_config(data_root, epochs=3)

    def load(ckpt_dir: Path, cfg=cfg, model=None):
        model = model or build_model(cfg.model)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
        scheduler = step_scheduler(optimizer, WarmupCosine(cfg.train.lr, 1e-5, 1e-7, 1, 3), 2)
        return load_train_checkpoint(ckpt_dir, model, optimizer, scheduler, cfg)

    ckpt = finished_run / 'checkpoints'
    progress, rng = load(ckpt)
    assert (progress.epoch, progress.step_in_epoch, progress.global_step) == (3, 0, 6) and len(rng) == 1

    with pytest.raises(TrainCheckpointError, match=r'train\.lr: 0\.001 -> 0\.0005'):
        load(ckpt, cfg=replace(cfg, train=replace(cfg.train, lr=5e-4)))
    with pytest.raises(TrainCheckpointError, match='no training checkpoint'):
        load(tmp_path / 'empty')
    wider = replace(cfg.model, class_dim=48)
    with pytest.raises(TrainCheckpointError, match='written for another config'):
        load(ckpt, cfg=replace(cfg, model=wider), model=build_model(wider))

    broken = tmp_path / 'broken'
    broken.mkdir()
    for path in ckpt.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    weights = sorted(broken.glob('step_*.safetensors'))[-1]
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(TrainCheckpointError, match=rf'{weights.name}: sha256 .* does not match'):
        load(broken)
    state = sorted(broken.glob('step_*.pt'))[-1]
    state.write_bytes(state.read_bytes()[:500])
    with pytest.raises(TrainCheckpointError, match=rf'{state.name}: corrupt or truncated'):
        load(broken)


def test_a_new_run_refuses_to_overwrite_a_checkpointed_one(data_root: Path, finished_run: Path):
    with pytest.raises(FileExistsError, match='--resume'):
        train(tiny_config(data_root, epochs=3), finished_run, class_table_run=finished_run)


def test_two_process_gloo_ddp_smoke_run(data_root: Path, tmp_path: Path):
    cfg = tiny_config(data_root, epochs=1, prompt_epochs=1)
    config_path = save_config(cfg, tmp_path / 'tiny.yaml')
    run = tmp_path / 'ddp'
    # Own session, so a hang kills torchrun *and* its workers (they would outlive a killed torchrun).
    process = subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
                                '2', '-m', 'mesc3d_training.cli', 'train', str(config_path), '--out', str(run)],
                               env=dict(subprocess_env(), OMP_NUM_THREADS='1'), stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr[-3000:]
    loaded = load_model(run / 'model.yaml')
    assert loaded.metrics['processes'] == 2 and loaded.metrics['device'] == 'cpu'
    assert [s for s, _ in read_steps(run)] == [1, 2]


def test_schedule_warms_up_then_follows_the_cosine():
    schedule = WarmupCosine(base_lr=1e-3, warmup_lr=1e-5, min_lr=1e-7, warmup_epochs=2, total_epochs=10)
    assert schedule.lr(0) == pytest.approx(1e-5)
    assert schedule.lr(1) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    # timm semantics: after warm-up the cosine is counted from epoch 0, not from the end of warm-up.
    assert schedule.lr(2) == pytest.approx(1e-7 + 0.5 * (1e-3 - 1e-7) * (1 + math.cos(math.pi * 0.2)))
    assert schedule.lr(10) == pytest.approx(1e-7)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = step_scheduler(optimizer, schedule, steps_per_epoch=4)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]['lr'] == pytest.approx(schedule.lr(6 / 4))
    with pytest.raises(ValueError, match='warmup_epochs=11'):
        WarmupCosine(1e-3, 1e-5, 1e-7, warmup_epochs=11, total_epochs=10)


def test_epoch_batches_split_ranks_and_restart_mid_epoch():
    def batches(rank: int, world: int, start: int = 0) -> list:
        sampler = EpochBatches(20, batch_size=4, steps_per_epoch=4, seed=3,
                               ctx=Distributed(rank, world, torch.device('cpu')))
        sampler.set_epoch(1, start)
        return list(sampler)

    single = batches(0, 1)
    assert len(single) == 4 and len({i for b in single for i, _ in b}) == 16   # no repeats within an epoch
    halves = [batches(0, 2), batches(1, 2)]
    assert [a + b for a, b in zip(*halves)] == single, 'two ranks split each global batch, same items and seeds'
    assert batches(0, 1, start=2) == single[2:]
    other_epoch = EpochBatches(20, 4, 4, 3, Distributed(0, 1, torch.device('cpu')))
    other_epoch.set_epoch(2, 0)
    assert list(other_epoch) != single
